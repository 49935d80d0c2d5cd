"""librdkafka settings passed through from STEPSTREAM_KAFKA_* and a properties file."""

from __future__ import annotations

import confluent_kafka
import pytest

from topics.settings import (
    Settings,
    SettingsError,
    kafka_passthrough,
    kafka_problem,
    parse_properties,
    read_kafka_file,
    redact,
)

ENV = {"STEPSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
       "STEPSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
       "STEPSTREAM_KAFKA_SASL_PASSWORD": "hunter2",
       "STEPSTREAM_PARTITIONS": "4"}


def test_variables_map_to_librdkafka_names_and_win_over_the_file() -> None:
    file_text = "# client.properties\nsasl.username = app\nsasl.mechanism: PLAIN\n\n! x\n"
    # An empty variable is unset, as for every STEPSTREAM_* variable.
    assert kafka_passthrough({**ENV, "STEPSTREAM_KAFKA_DEBUG": ""}, file_text) == (
        ("sasl.mechanism", "SCRAM-SHA-512"), ("sasl.password", "hunter2"),
        ("sasl.username", "app"), ("security.protocol", "SASL_SSL"))


def test_the_file_must_be_read_by_the_caller_and_parse() -> None:
    env = {**ENV, "STEPSTREAM_KAFKA_CONFIG": "/etc/stepstream/client.properties"}
    with pytest.raises(SettingsError, match="was not read"):
        Settings.from_env(env)
    settings = Settings.from_env(env, kafka_file_text="ssl.ca.location=/ca.pem")
    assert ("ssl.ca.location", "/ca.pem") in settings.kafka
    with pytest.raises(SettingsError, match="line 2: expected name=value"):
        parse_properties("a=1\njust words\n")

    def missing(path: str) -> str:
        raise FileNotFoundError(2, "No such file or directory")
    with pytest.raises(SettingsError, match="cannot read it \\(No such file or directory\\)"):
        read_kafka_file(env, missing)


@pytest.mark.parametrize("env, fragment", [
    ({"STEPSTREAM_KAFKA_GROUP_ID": "mine"}, "stepstream sets group.id itself"),
    ({"STEPSTREAM_KAFKA_ACKS": "1"}, "stepstream sets acks itself"),
    ({"STEPSTREAM_KAFKA_BOOTSTRAP_SERVERS": "x:1"}, "bootstrap.servers"),
    ({"STEPSTREAM_KAFKA_A B": "1"}, "not a librdkafka setting name"),
])
def test_settings_stepstream_owns_or_bad_names_are_refused(env: dict[str, str],
                                                          fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment):
        Settings.from_env(env)


def test_clients_get_the_passthrough_under_stepstreams_own_settings() -> None:
    settings = Settings.from_env({**ENV, "STEPSTREAM_KAFKA_CLIENT_ID": "theirs"},
                                 brokers="b:9092")
    conf = settings.client_config({"client.id": "stepstream-engine", "linger.ms": 5})
    assert conf["bootstrap.servers"] == "b:9092" and conf["sasl.password"] == "hunter2"
    assert conf["client.id"] == "stepstream-engine" and conf["linger.ms"] == 5


def test_secrets_never_show_in_the_settings_repr_or_redacted_views() -> None:
    settings = Settings.from_env(ENV)
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)
    shown = redact(settings.client_config())
    assert shown["sasl.password"] == "***" and shown["sasl.mechanism"] == "SCRAM-SHA-512"
    assert redact({"ssl.key.password": "x", "sasl.oauthbearer.client.secret": "y"}) == {
        "ssl.key.password": "***", "sasl.oauthbearer.client.secret": "***"}


def trial(config: dict[str, str]) -> None:
    confluent_kafka.Producer({**config, "log_level": 0}).flush(0)


def test_librdkafka_judges_names_and_values_at_start_in_one_line() -> None:
    complete = {**ENV, "STEPSTREAM_KAFKA_SASL_USERNAME": "app"}
    assert kafka_problem(Settings.from_env(complete), trial) is None
    # librdkafka also checks settings against each other.
    problem = kafka_problem(Settings.from_env(ENV), trial)
    assert problem is not None and "sasl.username and sasl.password must be set" in problem
    bad_name = Settings.from_env({"STEPSTREAM_KAFKA_SASL_MECHANISMZ": "PLAIN"})
    assert kafka_problem(bad_name, trial) == (
        "a librdkafka setting passed through (STEPSTREAM_KAFKA_* or STEPSTREAM_KAFKA_CONFIG)"
        ' is refused: No such configuration property: "sasl.mechanismz"')
    bad_value = Settings.from_env({"STEPSTREAM_KAFKA_SECURITY_PROTOCOL": "BOGUS"})
    problem = kafka_problem(bad_value, trial)
    assert problem is not None and 'Invalid value "BOGUS"' in problem
