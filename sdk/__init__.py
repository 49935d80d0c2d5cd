"""stepstream SDK: durable functions for Python on Kafka.

    import sdk
    client = sdk.Client(app_id="shop")

    @client.create_function(fn_id="process-order",
                            trigger=sdk.TriggerEvent(event="shop/order.created"))
    async def process_order(ctx: sdk.Context) -> dict:
        order = await ctx.step.run("validate", validate_order, ctx.event.data["order_id"])
        await ctx.step.sleep("cool-off", "2s")
        return order

    client.send_sync(sdk.Event(name="shop/order.created", data={"order_id": 7}))  # or await client.send(...)
    client.worker(concurrency=100).run()
"""

# Last: it runs functions as the worker does, so it needs the rest.
from sdk import testing
from sdk._client import Client
from sdk._connect import BrokerUnreachableError
from sdk._context import Context, ContextSync
from sdk._encryption import DecryptionError, EncryptionMiddleware, Encryptor
from sdk._errors import (
    ConfigError,
    EventError,
    NonRetriableError,
    RetryAfterError,
    SendError,
    StepError,
)
from sdk._events import Event, TriggerCron, TriggerEvent, TriggerTopic
from sdk._flow import Batch, Concurrency, Debounce, Priority, RateLimit, Singleton, Throttle
from sdk._function import Function, FunctionConfig
from sdk._group import Group, ParallelMode
from sdk._middleware import (
    Middleware,
    MiddlewareSync,
    SendEventsResult,
    StepMemos,
    TransformOutputResult,
    TransformOutputStepInfo,
)
from sdk._options import Cancel, Timeouts
from sdk._step import Step
from sdk._sync import StepSync
from sdk._worker import Worker

__all__ = [
    "Batch",
    "BrokerUnreachableError",
    "Cancel",
    "Client",
    "Concurrency",
    "ConfigError",
    "Context",
    "ContextSync",
    "Debounce",
    "DecryptionError",
    "EncryptionMiddleware",
    "Encryptor",
    "Event",
    "EventError",
    "Function",
    "FunctionConfig",
    "Group",
    "Middleware",
    "MiddlewareSync",
    "NonRetriableError",
    "ParallelMode",
    "Priority",
    "RateLimit",
    "RetryAfterError",
    "SendError",
    "SendEventsResult",
    "Singleton",
    "Step",
    "StepError",
    "StepMemos",
    "StepSync",
    "Throttle",
    "Timeouts",
    "TransformOutputResult",
    "TransformOutputStepInfo",
    "TriggerCron",
    "TriggerEvent",
    "TriggerTopic",
    "Worker",
    "testing",
]
