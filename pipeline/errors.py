"""The one base class of the errors a user can fix: bad params, unreadable or unusable input.

A stage that meets one prints its message (no traceback) and exits with status 1; under Prefect the flow
run ends as Failed with a one-line reason (``pipeline.orchestration.flows``). Each concern defines its own
subclass beside the code that raises it (``ParamsError`` in ``pipeline.config``, ``DataError`` in
``pipeline.data.readers``, ...), so that this module imports nothing and every stage may depend on it.
"""


class UserError(Exception):
    """An error whose message tells the user what to change: the file, line or params key, and why."""
