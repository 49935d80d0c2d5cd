"""step.run(..., output_type=Model) and create_function(output_type=...) with pydantic,
as Inngest's PydanticSerializer: stored as JSON, returned as the type on replay."""

from __future__ import annotations

import sys
from typing import Any

import pydantic
import pytest

import sdk
from tests.unit.sdk.test_execution import define, make_task, ok, only, run
from topics import records


class User(pydantic.BaseModel):
    name: str
    age: int = 0


def test_a_typed_step_stores_json_and_replays_the_model() -> None:
    seen: list[Any] = []

    async def fn(ctx: sdk.Context) -> str:
        user = await ctx.step.run("load", lambda: User(name="Ada", age=36), output_type=User)
        seen.append(user)
        many = await ctx.step.run("many", lambda: [User(name="B")],
                                  output_serializer=pydantic.TypeAdapter(list[User]))
        seen.append(many)
        return user.name

    first = only(run(define(fn), make_task()))
    assert first.op == records.STEP_COMPLETED
    assert first.output == {"name": "Ada", "age": 36}  # plain JSON on the wire
    second = only(run(define(fn), make_task({"load": ok(first.output)})))
    assert second.output == [{"name": "B", "age": 0}]
    done = only(run(define(fn), make_task({"load": ok(first.output),
                                           "many": ok(second.output)})))
    assert done.op == records.FUNCTION_COMPLETED and done.output == "Ada"
    assert seen[-2] == User(name="Ada", age=36) and isinstance(seen[-2], User)
    assert seen[-1] == [User(name="B")]


def test_a_value_that_does_not_fit_fails_the_step_without_retries() -> None:
    async def fn(ctx: sdk.Context) -> None:
        await ctx.step.run("load", lambda: {"nom": "x"}, output_type=User)

    o = only(run(define(fn), make_task()))
    assert o.op == records.STEP_FAILED and o.retriable is False
    assert o.error is not None and o.error["code"] == "output_unserializable"
    assert "not a valid User" in str(o.error["message"])


def test_the_function_output_is_converted_with_its_output_type() -> None:
    client = sdk.Client(app_id="shop", brokers="unused:9092")

    @client.create_function(fn_id="typed", trigger=sdk.TriggerEvent(event="t"),
                            output_type=list[User])
    async def typed(ctx: sdk.Context) -> list[User]:
        return [User(name="Ada")]

    o = only(run(typed, make_task()))
    assert o.op == records.FUNCTION_COMPLETED and o.output == [{"name": "Ada", "age": 0}]

    with pytest.raises(sdk.ConfigError, match="not a type pydantic can validate"):
        client.create_function(fn_id="bad", trigger=sdk.TriggerEvent(event="t"),
                               output_type=object())
    with pytest.raises(TypeError, match="not both"):
        client.create_function(fn_id="both", trigger=sdk.TriggerEvent(event="t"),
                               output_type=User, output_serializer=User)


def test_a_clear_error_without_pydantic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydantic", None)  # import pydantic fails
    client = sdk.Client(app_id="shop", brokers="unused:9092")
    with pytest.raises(sdk.ConfigError, match=r"pip install 'stepstream\[pydantic\]'"):
        client.create_function(fn_id="f", trigger=sdk.TriggerEvent(event="t"),
                               output_type=User)

    async def fn(ctx: sdk.Context) -> None:
        await ctx.step.run("load", lambda: None, output_type=User)

    o = only(run(define(fn), make_task()))
    assert o.op == records.FUNCTION_FAILED and o.retriable is False
    assert o.error is not None and "stepstream[pydantic]" in str(o.error["message"])


def test_typed_outputs_in_a_sync_function_run_by_sdk_testing() -> None:
    client = sdk.Client(app_id="shop", brokers="unused:9092")

    @client.create_function(fn_id="sync-typed", trigger=sdk.TriggerEvent(event="t"),
                            output_type=User)
    def sync_typed(ctx: sdk.ContextSync) -> User:
        user = ctx.step.run("load", lambda: User(name="Ada"), output_type=User)
        assert isinstance(user, User)
        return user.model_copy(update={"age": 37})

    result = sdk.testing.trigger(sync_typed, sdk.Event(name="t"))
    assert result.status == "completed", result.error
    assert result.output == {"name": "Ada", "age": 37}
    assert result.step("load").output == {"name": "Ada", "age": 0}

    @client.create_function(fn_id="refuses", retries=2, trigger=sdk.TriggerEvent(event="t"))
    def refuses(ctx: sdk.ContextSync) -> None:
        raise sdk.NonRetriableError("no", quiet=True)

    failed = sdk.testing.trigger(refuses, sdk.Event(name="t"))
    assert failed.error is not None and failed.error.code == "non_retriable_error"
    assert failed.attempts == 1


def test_typed_outputs_compose_with_the_encryption_middleware() -> None:
    key = "k" * 32
    client = sdk.Client(app_id="shop", brokers="unused:9092",
                        middleware=[sdk.EncryptionMiddleware.factory(key)])

    @client.create_function(fn_id="enc", trigger=sdk.TriggerEvent(event="t"),
                            output_type=User)
    async def enc(ctx: sdk.Context) -> User:
        user = await ctx.step.run("load", lambda: User(name="Ada"), output_type=User)
        assert isinstance(user, User)  # decrypted, then validated
        return user

    result = sdk.testing.trigger(enc, sdk.Event(name="t"))
    assert result.status == "completed", result.error
    assert sdk.Encryptor(key).decrypt(result.output) == {"name": "Ada", "age": 0}
    assert sdk.Encryptor(key).decrypt(result.step("load").output) == {"name": "Ada", "age": 0}
