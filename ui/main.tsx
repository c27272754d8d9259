/** The dashboard's entry: bundled by scripts/build-ui.mjs into dist/ui/app.js, served at /ui/. */
import { render } from "preact";

import { App } from "./app.js";

const root = document.getElementById("app");
if (root) render(<App />, root);
