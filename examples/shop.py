"""A small shop: the example app `make dev` runs.

Send an order with `stepstream send shop/order.created '{"order_id": 7, "total": 12.5}'`
and watch it with `stepstream runs list` / `stepstream runs show RUN_ID`.
"""

from __future__ import annotations

import asyncio
import datetime
import random

import sdk

client = sdk.Client(app_id="shop")


def validate_order(order_id: int) -> dict:
    if order_id <= 0:
        raise sdk.NonRetriableError(f"order {order_id} does not exist")
    return {"order_id": order_id, "items": 2}


async def charge_card(order: dict) -> dict:
    await asyncio.sleep(0.01)  # the payment provider's round trip
    if random.random() < 0.2:
        raise ConnectionError("payment provider timed out")  # retried with backoff
    return {"id": f"ch_{order['order_id']}", "amount": 12.5}


def reserve_stock() -> str:
    return "reserved"


def book_courier() -> str:
    return "booked"


@client.create_function(
    fn_id="process-order",
    trigger=sdk.TriggerEvent(event="shop/order.*", expression="event.data.total > 0"),
    retries=3,
    # One run per order executing at a time; different orders run in parallel.
    # `stepstream functions show process-order` shows each order's running and queued.
    concurrency=sdk.Concurrency(limit=1, key="string(event.data.order_id)"),
)
async def process_order(ctx: sdk.Context) -> dict:
    order = await ctx.step.run("validate", validate_order, ctx.event.data["order_id"])
    charge = await ctx.step.run("charge", charge_card, order)
    # Shown by `stepstream dev` (not while the function replays past this point).
    ctx.logger.info("order %s charged: %s", order["order_id"], charge["id"])
    await ctx.step.sleep("cool-off", datetime.timedelta(seconds=2))
    await ctx.step.send_event("notify", sdk.Event(name="shop/order.charged",
                                                  data={"id": charge["id"]}))
    a, b = await ctx.step.parallel((
        lambda: ctx.step.run("a", reserve_stock),
        lambda: ctx.step.run("b", book_courier),
    ))
    return {"charge": charge["id"], "a": a, "b": b}


@client.create_function(fn_id="send-receipt",
                        trigger=sdk.TriggerEvent(event="shop/order.charged"))
async def send_receipt(ctx: sdk.Context) -> str:
    return await ctx.step.run("email", lambda: f"receipt for {ctx.event.data['id']}")
