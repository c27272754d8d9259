"""The Python client of the HPC function fabric's HTTP API (standard library only).

Register Python functions from their source, run them on an endpoint, get their results, list
and cancel tasks, or use an :class:`Executor` (a ``concurrent.futures.Executor``)::

    from fabric_client import Client, Executor

    client = Client("http://127.0.0.1:8080", token)

    def square(x):
        return x * x

    with Executor(client, endpoint_id) as ex:
        print(list(ex.map(square, range(10))))
"""

from ._wire import from_wire, to_wire
from .client import TERMINAL_STATES, Client, TaskIds, TaskListing, TaskPage, result_of
from .errors import CODES, BatchSubmitError, FabricError, ResultTimeout, TaskFailed
from .executor import Executor, FabricFuture

__version__ = "0.1.0"

__all__ = [
    "BatchSubmitError",
    "CODES",
    "Client",
    "Executor",
    "FabricError",
    "FabricFuture",
    "ResultTimeout",
    "TERMINAL_STATES",
    "TaskFailed",
    "TaskIds",
    "TaskListing",
    "TaskPage",
    "__version__",
    "from_wire",
    "result_of",
    "to_wire",
]
