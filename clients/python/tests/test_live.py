"""The client against a real broker and endpoint (test/python-client.test.ts starts them and runs
each class here as one test). Needs FABRIC_HTTP_ADDRESS, FABRIC_TOKEN and FABRIC_ENDPOINT_ID (an
endpoint of the token's user that runs Python); without them every test here is skipped."""

import concurrent.futures
import gc
import os
import sys
import threading
import time
import unittest
import weakref

sys.path.insert(0, os.environ.get("FABRIC_CLIENT_PATH") or os.path.join(os.path.dirname(__file__), "..", "src"))

from fabric_client import (  # noqa: E402
    BatchSubmitError,
    Client,
    Executor,
    FabricError,
    ResultTimeout,
    TaskFailed,
)

LIVE = all(os.environ.get(k) for k in ("FABRIC_HTTP_ADDRESS", "FABRIC_TOKEN", "FABRIC_ENDPOINT_ID"))
RESULT_TIMEOUT = 60


def until(condition, timeout=30.0, what="the condition"):
    """Polls ``condition`` (every 50 ms) until it is truthy; its value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.05)


# The functions the tests run remotely, each registered from its source here.


def add(a, b=0):
    """Adds two numbers."""
    return a + b


def echo(value):
    return value


def check(x):
    if x > 2:
        raise ValueError("x too large: %d" % x)
    return x


def checked(x):
    # A helper of the same module is not sent with the function: define it inside.
    def check(x):
        if x > 2:
            raise ValueError("x too large: %d" % x)
        return x

    return check(x)


def snooze(seconds):
    import time

    time.sleep(seconds)
    return seconds


def square(x):
    return x * x


def whoami():
    import os

    return os.getpid()


def lengths(blob, chunks):
    return {"blob": len(blob), "chunks": [len(c) for c in chunks], "back": blob[::-1], "kind": type(blob).__name__}


@unittest.skipUnless(LIVE, "needs FABRIC_HTTP_ADDRESS, FABRIC_TOKEN and FABRIC_ENDPOINT_ID")
class LiveCase(unittest.TestCase):
    client: Client
    endpoint: str

    @classmethod
    def setUpClass(cls):
        cls.client = Client()
        cls.endpoint = os.environ["FABRIC_ENDPOINT_ID"]

    @classmethod
    def tearDownClass(cls):
        cls.client.close()


class FunctionsTest(LiveCase):
    def test_register_function_sends_the_dedented_source_without_decorators(self):
        fid = self.client.register_function(checked, min_version="3.8")
        fn = self.client.get_function(fid)
        python = fn["spec"]["python"]
        self.assertEqual(python["entryPoint"], "checked")
        self.assertEqual(python["minVersion"], "3.8")
        self.assertTrue(python["source"].startswith("def checked(x):\n"), python["source"])
        self.assertEqual(fn["name"], "checked")
        self.assertIn(fid, [f["id"] for f in self.client.list_functions()])
        described = self.client.get_function(self.client.register_function(add, name="adder"))
        self.assertEqual((described["name"], described["description"]), ("adder", "Adds two numbers."))
        self.client.delete_function(fid)
        with self.assertRaises(FabricError) as caught:
            self.client.get_function(fid)
        self.assertEqual(caught.exception.code, "NOT_FOUND")

    def test_a_shell_function_runs_with_its_placeholders_filled(self):
        fid = self.client.register_shell("echo hello {who}")
        result = self.client.get_result(self.client.run(fid, endpoint_id=self.endpoint, who="there; id"), RESULT_TIMEOUT)
        self.assertEqual(result["stdout"], "hello there; id\n")

    def test_a_bad_spec_is_invalid_argument_with_the_broker_message(self):
        with self.assertRaises(FabricError) as caught:
            self.client.register_python("def f():\n    pass\n", "f", min_version="three")
        self.assertEqual((caught.exception.code, caught.exception.status), ("INVALID_ARGUMENT", 400))
        self.assertIn("minVersion", caught.exception.message)


class RunTest(LiveCase):
    def test_run_and_get_result_with_args_and_kwargs(self):
        fid = self.client.register_function(add)
        task_id = self.client.run(fid, 2, endpoint_id=self.endpoint, b=40)
        self.assertEqual(self.client.get_result(task_id, timeout=RESULT_TIMEOUT), 42)
        task = self.client.get_task(task_id)
        self.assertEqual((task["id"], task["state"], task["functionId"]), (task_id, "success", fid))
        self.assertIn("running", [h["state"] for h in task["history"]])

    def test_a_failing_function_raises_task_failed_with_the_remote_traceback(self):
        fid = self.client.register_function(checked)
        task_id = self.client.run(fid, 3, endpoint_id=self.endpoint)
        with self.assertRaises(TaskFailed) as caught:
            self.client.get_result(task_id, timeout=RESULT_TIMEOUT)
        err = caught.exception
        self.assertEqual((err.task_id, err.state, err.reason), (task_id, "failed", "function_error"))
        self.assertEqual((err.remote_type, err.remote_message), ("ValueError", "x too large: 3"))
        self.assertIn("in checked", err.remote_traceback)
        self.assertIn("in check", err.remote_traceback)
        self.assertIn('raise ValueError("x too large: %d" % x)', err.remote_traceback)
        self.assertIn("Remote traceback:", str(err))
        self.assertIn("ValueError: x too large: 3", str(err))

    def test_bytes_round_trip_as_bytes(self):
        fid = self.client.register_function(lengths)
        blob = bytes(range(256)) * 1000
        task_id = self.client.run(fid, blob, [b"", bytearray(b"ab"), memoryview(b"xyz")], endpoint_id=self.endpoint)
        result = self.client.get_result(task_id, timeout=RESULT_TIMEOUT)
        self.assertEqual(result, {"blob": 256000, "chunks": [0, 2, 3], "back": blob[::-1], "kind": "bytes"})
        self.assertIsInstance(self.client.get_task(task_id)["result"]["back"], bytes)

    def test_a_result_not_ready_in_time_is_a_timeout_and_a_cancelled_task_fails_as_cancelled(self):
        fid = self.client.register_function(snooze)
        task_id = self.client.run(fid, 30, endpoint_id=self.endpoint)
        started = time.monotonic()
        with self.assertRaises(ResultTimeout) as caught:
            self.client.get_result(task_id, timeout=0.5)
        self.assertLess(time.monotonic() - started, 5)
        self.assertIsInstance(caught.exception, TimeoutError)
        self.assertEqual(caught.exception.code, "DEADLINE_EXCEEDED")
        with self.assertRaises(ResultTimeout) as watched:
            list(self.client.watch([task_id], timeout=0.5))
        self.assertEqual(watched.exception.task_ids, [task_id])
        until(lambda: self.client.get_task(task_id)["state"] == "running", what="the task to run")
        cancelled = self.client.cancel(task_id)
        self.assertEqual(cancelled["id"], task_id)
        with self.assertRaises(TaskFailed) as failed:
            self.client.get_result(task_id, timeout=RESULT_TIMEOUT)
        self.assertEqual((failed.exception.state, failed.exception.code), ("cancelled", "CANCELLED"))
        # A finished task stays as it was.
        done = self.client.run(self.client.register_function(echo), 1, endpoint_id=self.endpoint)
        self.assertEqual(self.client.get_result(done, RESULT_TIMEOUT), 1)
        self.assertEqual(self.client.cancel([done])[0]["state"], "success")

    def test_wait_answers_as_soon_as_the_first_finishes(self):
        slow = self.client.run(self.client.register_function(snooze), 20, endpoint_id=self.endpoint)
        quick = self.client.run(self.client.register_function(echo), "fast", endpoint_id=self.endpoint)
        started = time.monotonic()
        finished, pending = self.client.wait([slow, quick], timeout=RESULT_TIMEOUT, return_when="FIRST_COMPLETED")
        self.assertLess(time.monotonic() - started, 15)
        self.assertEqual([t["id"] for t in finished], [quick])
        self.assertEqual(pending, [slow])
        self.client.cancel(slow)

    def test_one_client_is_shared_by_threads(self):
        fid = self.client.register_function(square)
        results = {}
        errors = []

        def work(n):
            try:
                for i in range(5):
                    x = n * 10 + i
                    results[x] = self.client.get_result(self.client.run(fid, x, endpoint_id=self.endpoint), RESULT_TIMEOUT)
            except BaseException as err:  # reported below
                errors.append(err)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(results, {x: x * x for x in results})
        self.assertEqual(len(results), 40)


class BatchTest(LiveCase):
    def test_submit_batch_of_200_in_chunks_one_group(self):
        fid = self.client.register_function(add)
        calls = [((i,), {"b": 1000}) for i in range(200)]
        ids = self.client.submit_batch(fid, self.endpoint, calls, chunk_size=64)
        self.assertEqual(len(ids), 200)
        self.assertEqual(len(set(ids)), 200)
        self.assertTrue(ids.group_id)
        finished, pending = self.client.wait(ids, timeout=RESULT_TIMEOUT)
        self.assertEqual(pending, [])
        by_id = {t["id"]: t for t in finished}
        self.assertEqual([by_id[i]["result"] for i in ids], [i + 1000 for i in range(200)])
        self.assertEqual({t["groupId"] for t in finished}, {ids.group_id})
        # The group's stream sees them all, each once.
        watched = list(self.client.watch(group_id=ids.group_id, timeout=RESULT_TIMEOUT))
        self.assertEqual(sorted(t["id"] for t in watched), sorted(ids))

    def test_a_refused_batch_raises_and_a_refused_later_chunk_names_the_tasks_made(self):
        fid = self.client.register_function(echo)
        with self.assertRaises(FabricError) as caught:
            self.client.submit_batch(fid, "not-an-endpoint", [((1,), None)])
        self.assertNotIsInstance(caught.exception, BatchSubmitError)
        self.assertEqual(caught.exception.code, "INVALID_ARGUMENT")
        # The third call's argument is over the broker's payload limit (1 MiB in the test broker).
        calls = [(("small",), None), (("small",), None), (("x" * (1536 * 1024),), None)]
        with self.assertRaises(BatchSubmitError) as split:
            self.client.submit_batch(fid, self.endpoint, calls, chunk_size=2)
        err = split.exception
        self.assertEqual((len(err.task_ids), err.total), (2, 3))
        self.assertIn("2 of 3 tasks were submitted", err.message)
        finished, _ = self.client.wait(err.task_ids, timeout=RESULT_TIMEOUT)
        self.assertEqual([t["result"] for t in finished], ["small", "small"])
        self.assertEqual({t["groupId"] for t in finished}, {err.group_id})

    def test_arguments_json_cannot_carry_are_refused_before_sending(self):
        with self.assertRaises(FabricError) as caught:
            self.client.run("f", float("nan"), endpoint_id=self.endpoint)
        self.assertEqual(caught.exception.code, "INVALID_ARGUMENT")
        self.assertIn("calls[0] args", caught.exception.message)


class ExecutorTest(LiveCase):
    def test_map_and_as_completed_over_many_futures(self):
        with Executor(self.client, self.endpoint) as ex:
            self.assertEqual(list(ex.map(square, range(100), timeout=RESULT_TIMEOUT)), [i * i for i in range(100)])
            futures = {ex.submit(add, i, b=1): i for i in range(200)}
            seen = set()
            for future in concurrent.futures.as_completed(futures, timeout=RESULT_TIMEOUT):
                self.assertEqual(future.result(), futures[future] + 1)
                self.assertIsNotNone(future.task_id)
                seen.add(futures[future])
            self.assertEqual(seen, set(range(200)))
        # One registration per function source, however many submissions.
        names = [f["name"] for f in self.client.list_functions()]
        self.assertGreaterEqual(names.count("square"), 1)

    def test_a_failure_is_the_future_exception(self):
        with Executor(self.client, self.endpoint) as ex:
            bad = ex.submit(checked, 5)
            good = ex.submit(checked, 1)
            self.assertIsInstance(bad.exception(timeout=RESULT_TIMEOUT), TaskFailed)
            self.assertEqual(bad.exception().remote_type, "ValueError")
            self.assertEqual(good.result(timeout=RESULT_TIMEOUT), 1)
            with self.assertRaises(TaskFailed):
                bad.result()
            unsendable = ex.submit(echo, {1, 2})
            self.assertEqual(unsendable.exception(timeout=5).code, "INVALID_ARGUMENT")

    def test_future_cancel_cancels_the_remote_task(self):
        ex = Executor(self.client, self.endpoint)
        try:
            future = ex.submit(snooze, 30)
            until(lambda: future.task_id, what="the task to be submitted")
            until(lambda: self.client.get_task(future.task_id)["state"] == "running", what="the task to run")
            self.assertTrue(future.cancel())
            self.assertTrue(future.cancelled())
            done, _ = concurrent.futures.wait([future], timeout=1)
            self.assertEqual(done, {future})
            until(lambda: self.client.get_task(future.task_id)["state"] == "cancelled", what="the remote task to be cancelled")
            after = ex.submit(square, 7)
            self.assertEqual(after.result(timeout=RESULT_TIMEOUT), 49)
        finally:
            ex.shutdown(wait=True)

    def test_shutdown_semantics(self):
        ex = Executor(self.client, self.endpoint)
        slow = [ex.submit(snooze, 30) for _ in range(2)]
        until(lambda: all(f.task_id for f in slow), what="the slow tasks to be submitted")
        until(
            lambda: all(self.client.get_task(f.task_id)["state"] == "running" for f in slow),
            what="the slow tasks to run",
        )
        started = time.monotonic()
        ex.shutdown(wait=True, cancel_futures=True)
        self.assertLess(time.monotonic() - started, 10)
        self.assertTrue(all(f.cancelled() for f in slow))
        for f in slow:
            until(lambda f=f: self.client.get_task(f.task_id)["state"] == "cancelled", what="the remote tasks to be cancelled")
        with self.assertRaises(RuntimeError):
            ex.submit(square, 1)
        # shutdown(wait=True) waits for what is outstanding.
        ex = Executor(self.client, self.endpoint)
        pending = [ex.submit(snooze, 0.5) for _ in range(2)]
        ex.shutdown(wait=True)
        self.assertTrue(all(f.done() and f.result() == 0.5 for f in pending))

    def test_an_executor_dropped_without_shutdown_leaves_no_thread(self):
        import fabric_client.executor as executor_module

        saved = executor_module.IDLE_EXIT_S
        executor_module.IDLE_EXIT_S = 0.2
        try:
            ex = Executor(self.client, self.endpoint)
            self.assertEqual(ex.submit(square, 2).result(timeout=RESULT_TIMEOUT), 4)
            dropped = weakref.ref(ex)
            del ex
            until(
                lambda: not [t for t in threading.enumerate() if t.name.startswith("fabric-executor")],
                timeout=10,
                what="the executor's threads to end",
            )
            gc.collect()
            self.assertIsNone(dropped())
        finally:
            executor_module.IDLE_EXIT_S = saved

    def test_a_registered_function_and_threads_submitting_together(self):
        fid = self.client.register_function(add)
        with Executor(self.client, self.endpoint) as ex:
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                futures = list(pool.map(lambda i: ex.submit_registered(fid, i, 1), range(80)))
            self.assertEqual([f.result(timeout=RESULT_TIMEOUT) for f in futures], [i + 1 for i in range(80)])


class ListTest(LiveCase):
    def test_list_tasks_filters_and_follows_the_cursor(self):
        before = time.time() - 1
        fid = self.client.register_function(checked)
        ids = self.client.submit_batch(fid, self.endpoint, [((i,), None) for i in range(12)])
        finished, _ = self.client.wait(ids, timeout=RESULT_TIMEOUT)
        self.assertEqual(len(finished), 12)
        listing = self.client.list_tasks(function_id=fid, limit=5)
        pages = list(listing.pages())
        self.assertGreaterEqual(len(pages), 3)
        listed = [t["id"] for page in pages for t in page.tasks]
        self.assertEqual(sorted(listed), sorted(ids))
        self.assertEqual(pages[-1].next_cursor, "")
        created = [t["createdAtMs"] for page in pages for t in page.tasks]
        self.assertEqual(created, sorted(created, reverse=True))
        failed = [t["id"] for t in self.client.list_tasks(state="failed", function_id=fid)]
        self.assertEqual(sorted(failed), sorted(ids[3:]))
        both = list(self.client.list_tasks(state=["failed", "success"], group_id=ids.group_id, created_after=before))
        self.assertEqual(len(both), 12)
        self.assertEqual(list(self.client.list_tasks(function_id=fid, created_before=before)), [])
        first = next(iter(self.client.list_tasks(endpoint_id=self.endpoint, function_id=fid)))
        self.assertEqual(set(first) >= {"id", "functionId", "endpointId", "groupId", "state", "createdAtMs"}, True)


    def test_endpoint_tasks_shows_an_unfinished_task(self):
        task_id = self.client.run(self.client.register_function(snooze), 20, endpoint_id=self.endpoint)
        try:
            listed = until(
                lambda: [t for t in self.client.endpoint_tasks(self.endpoint)["tasks"] if t["id"] == task_id],
                what="the task on its endpoint",
            )
            self.assertEqual(listed[0]["owner"], self.client.get_task(task_id)["owner"])
            self.assertIn(listed[0]["state"], ("waiting_for_endpoint", "waiting_for_nodes", "running"))
        finally:
            self.client.cancel(task_id)


class ErrorsTest(LiveCase):
    def test_a_bad_token_is_unauthenticated(self):
        bad = Client(os.environ["FABRIC_HTTP_ADDRESS"], "not-a-token")
        self.addCleanup(bad.close)
        with self.assertRaises(FabricError) as caught:
            bad.list_functions()
        self.assertEqual((caught.exception.code, caught.exception.status), ("UNAUTHENTICATED", 401))
        self.assertFalse(caught.exception.retryable)
        with self.assertRaises(FabricError) as again:
            bad.run("f", endpoint_id=self.endpoint)
        self.assertEqual(again.exception.code, "UNAUTHENTICATED")

    def test_unknown_ids_are_not_found(self):
        with self.assertRaises(FabricError) as caught:
            self.client.get_task("00000000-0000-4000-8000-000000000000")
        self.assertEqual((caught.exception.code, caught.exception.status), ("NOT_FOUND", 404))


if __name__ == "__main__":
    unittest.main()
