"""`dlms serve`'s own bad input: one `error:` line and exit status 2, before any model loads."""
from __future__ import annotations

import socket

import pytest

from dlms.cli import main
from dlms.serving.serve import named_runs


@pytest.mark.parametrize("argv,words", [
    (["--port", "70000"], "not a port"),
    (["--max_queue", "0"], "max_queue must be an integer of at least 1"),
    (["--max_steps", "-3"], "max_steps"),
    (["--queue_timeout", "0"], "queue_timeout"),
    (["--checkpoint", "a=x", "--checkpoint", "a=y"], "two runs are named 'a'"),
    (["--checkpoint", "=x"], "must be RUN or NAME=RUN"),
    (["--checkpoint", "/no/such/run"], "does not exist"),
])
def test_bad_serve_options_are_one_line_errors(argv, words, capsys):
    assert main(["serve", "--port", "0", *argv] if "--port" not in argv else ["serve", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and words in err and "\n" not in err


def test_a_port_in_use_is_named_before_loading(capsys):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert main(["serve", "--checkpoint", "/no/such/run", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err


def test_runs_are_named_by_their_folder_unless_named():
    assert named_runs(["runs/demo-masked/", "ar=runs/demo-ar"]) == {"demo-masked": "runs/demo-masked/",
                                                                    "ar": "runs/demo-ar"}
