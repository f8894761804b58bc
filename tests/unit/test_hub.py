"""The one loading policy for pretrained models (dlms.hub): a path-like name must be a folder, a
Hub id is read from the local cache first and online only when allowed, and every failure is one
error line of the caller's kind."""
from __future__ import annotations

import pytest

from dlms import hub
from dlms.errors import ConfigError, DataError
from dlms.hub import Pretrained, from_hub, load_pretrained, local_folder

KIND = Pretrained("widget", "Widget('{name}').save('DIR')", point="set widget=DIR", note="or use 'builtin'",
                  holds="widget.json", error=DataError)
BROKEN = "widget folder '{name}' is broken ({reason}); pass a folder written by Widget.save()"


def test_a_path_must_be_an_existing_folder(tmp_path):
    assert local_folder(str(tmp_path), KIND) == tmp_path
    assert local_folder("owner/name", KIND) is None and local_folder("gpt2", KIND) is None
    for name in (str(tmp_path / "nope"), "./nope", "a/b/c"):
        with pytest.raises(DataError, match=f"widget folder '{name}' does not exist; check the path"):
            local_folder(name, KIND)
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(DataError, match=r"is a file; pass the model's folder \(with widget.json\)"):
        local_folder(str(tmp_path / "f.txt"), KIND)


def test_a_hub_id_comes_from_the_cache_first_and_never_online_when_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls = []
    assert from_hub(lambda local: calls.append(local) or "cached", "o/n", KIND) == "cached" and calls == [True]

    def fail(local):
        calls.append(local)
        raise OSError("not here")

    calls.clear()
    with pytest.raises(DataError) as err:
        from_hub(fail, "o/n", KIND)
    assert calls == [True]
    assert str(err.value) == (
        "could not load widget 'o/n': it is not a local folder, not in the local Hugging Face cache, and the Hub is "
        "unreachable or has no such model (or use 'builtin'); on a machine with access run Widget('o/n').save('DIR'), "
        "copy DIR here and set widget=DIR")


def test_online_only_when_the_hub_answers(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    calls = []

    def online_only(local):
        calls.append(local)
        if local:
            raise OSError("not cached")
        return "downloaded"

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=5.0: True)
    assert from_hub(online_only, "o/n", KIND) == "downloaded" and calls == [True, False]
    calls.clear()
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=5.0: False)
    with pytest.raises(DataError, match="Hub is unreachable"):
        from_hub(online_only, "o/n", KIND)
    assert calls == [True]


def test_a_folder_is_read_from_disk_only_and_its_failure_is_one_line(tmp_path):
    calls = []
    assert load_pretrained(str(tmp_path), lambda source, local: calls.append((source, local)) or 1, KIND, BROKEN) == 1
    assert calls == [(str(tmp_path), True)]

    def broken(source, local):
        raise ValueError("no widget.json\nmore detail")

    with pytest.raises(DataError) as err:
        load_pretrained(str(tmp_path), broken, KIND, BROKEN)
    assert str(err.value) == (f"widget folder '{tmp_path}' is broken (no widget.json); pass a folder written by "
                              "Widget.save()")

    def refuses(source, local):
        raise ConfigError("the caller's own line")

    with pytest.raises(ConfigError, match="^the caller's own line$"):
        load_pretrained(str(tmp_path), refuses, KIND, BROKEN)
