"""stepstream SDK: durable functions for Python on Kafka.

    import sdk
    client = sdk.Client(app_id="shop")

    @client.create_function(fn_id="process-order",
                            trigger=sdk.TriggerEvent(event="shop/order.created"))
    async def process_order(ctx: sdk.Context) -> dict:
        order = await ctx.step.run("validate", validate_order, ctx.event.data["order_id"])
        await ctx.step.sleep("cool-off", "2s")
        return order

    client.send(sdk.Event(name="shop/order.created", data={"order_id": 7}))
    client.worker(concurrency=100).run()
"""

from sdk.client import Client
from sdk.context import Context
from sdk.errors import (
    ConfigError,
    EventError,
    NonRetriableError,
    RetryAfterError,
    SendError,
    StepError,
)
from sdk.events import Event, TriggerCron, TriggerEvent
from sdk.function import Function, FunctionConfig
from sdk.options import Cancel, Timeouts
from sdk.step import Step
from sdk.worker import Worker

__all__ = [
    "Cancel",
    "Client",
    "ConfigError",
    "Context",
    "Event",
    "EventError",
    "Function",
    "FunctionConfig",
    "NonRetriableError",
    "RetryAfterError",
    "SendError",
    "Step",
    "StepError",
    "Timeouts",
    "TriggerCron",
    "TriggerEvent",
    "Worker",
]
