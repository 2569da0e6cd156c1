# Factory record and config parsing on the hub, against protocol/vectors/factory.json
# (the same vectors the host's writer is checked with).
import json

from hemhub import config, factory


def _block(hexstr):
    b = bytearray(b"\xff" * 4096)
    raw = bytes.fromhex(hexstr)
    b[: len(raw)] = raw
    return b


def _vectors():
    with open("protocol/vectors/factory.json") as f:
        return json.load(f)


def test_valid_factory_record():
    for v in _vectors()["valid"]:
        rec, problem = factory.parse(_block(v["hex"]))
        assert problem is None, problem
        assert rec == v["expect"]


def test_invalid_factory_records_name_the_problem():
    for v in _vectors()["invalid"]:
        rec, problem = factory.parse(_block(v["hex"]))
        assert rec is None
        assert v["reason"] in problem, (v["reason"], problem)


def test_config_defaults_when_missing_or_garbage():
    assert config.load("/nonexistent/config.json") == config.DEFAULTS
    with open("/tmp/hemhub-test-config.json", "w") as f:
        f.write("{not json")
    assert config.load("/tmp/hemhub-test-config.json") == config.DEFAULTS


def test_config_overrides_known_keys():
    with open("/tmp/hemhub-test-config.json", "w") as f:
        json.dump({"health_persist_s": 5}, f)
    assert config.load("/tmp/hemhub-test-config.json")["health_persist_s"] == 5
