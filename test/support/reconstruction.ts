/** The reconstruction of the Python tests: a Shepp–Logan phantom, its sinogram, and back. */
import { expect } from "vitest";

/** Python source from lines (template literals would carry this file's indentation). */
export const py = (...lines: string[]) => lines.join("\n") + "\n";

/** A float64 array from `.npy` bytes (format 1.0, little-endian, C order), with its shape. */
export function readNpy(buf: Buffer): { shape: number[]; data: Float64Array } {
  expect(buf.subarray(0, 6).toString("latin1")).toBe("\x93NUMPY");
  const headerLen = buf.readUInt16LE(8);
  const header = buf.subarray(10, 10 + headerLen).toString("latin1");
  expect(header).toContain("'descr': '<f8'");
  expect(header).toContain("'fortran_order': False");
  const shape = /'shape': \(([^)]*)\)/
    .exec(header)![1]!
    .split(",")
    .filter((s) => s.trim() !== "")
    .map(Number);
  const body = buf.subarray(10 + headerLen);
  const data = new Float64Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength));
  return { shape, data };
}

/** `scan(size)` makes a phantom and its sinogram; `reconstruct(sinogram, theta)` runs filtered back-projection. */
export const RECONSTRUCTION = py(
  "import io",
  "import numpy as np",
  "from skimage.data import shepp_logan_phantom",
  "from skimage.transform import iradon, radon, rescale",
  "",
  "def _npy(a):",
  "    out = io.BytesIO()",
  "    np.save(out, np.ascontiguousarray(a, dtype='<f8'))",
  "    return out.getvalue()",
  "",
  "def scan(size):",
  "    phantom = rescale(shepp_logan_phantom(), size / 400.0, mode='reflect', channel_axis=None)",
  "    theta = np.linspace(0.0, 180.0, max(phantom.shape), endpoint=False)",
  "    return {'phantom': _npy(phantom), 'sinogram': _npy(radon(phantom, theta=theta)), 'theta': theta.tolist()}",
  "",
  "def reconstruct(sinogram, theta, filter_name='ramp'):",
  "    sino = np.load(io.BytesIO(sinogram))",
  "    return _npy(iradon(sino, theta=np.asarray(theta), filter_name=filter_name))",
);

/** The RMS difference of a reconstruction (`.npy` bytes) from the phantom it was scanned from. */
export function reconstructionError(phantomNpy: Buffer, reconNpy: Buffer): number {
  const phantom = readNpy(phantomNpy);
  const recon = readNpy(reconNpy);
  expect(recon.shape).toEqual(phantom.shape);
  let sq = 0;
  for (let i = 0; i < phantom.data.length; i++) sq += (recon.data[i]! - phantom.data[i]!) ** 2;
  return Math.sqrt(sq / phantom.data.length);
}
