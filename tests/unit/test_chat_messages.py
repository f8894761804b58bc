"""Chat messages as prompt/response rows (`data.messages_column`): the plain rendering, a tokenizer's
chat template, where the prompt ends and the response starts, rows without a final assistant turn
skipped and counted, the prompt of a chat run at sampling time, and the config keys refused together."""
from __future__ import annotations

import csv
import json

import pytest

from dlms.config import DataConfig, load_config
from dlms.data.builder import DatasetBuilder
from dlms.data.chat import (Conversation, RenderedPrompt, as_conversation, conversation_ids, render_plain,
                            split_conversation)
from dlms.data.sources import read_examples
from dlms.data.tokenizer import encode_texts, load_tokenizer, train_bpe_tokenizer
from dlms.errors import ConfigError, DataError
from tests.backbone_helpers import CHAT_TEMPLATE, chat_tokenizer

PAIRS = [(f"{n} {f}", f"the {n} serves {f} food .") for n in ("eagle", "mill", "aromi", "cotto")
         for f in ("thai", "french", "indian")]


def chat(*turns: tuple[str, str]) -> dict:
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def chat_file(tmp_path, extra: list[dict] = (), n: int = 24):
    rows = [chat(("system", "be brief"), ("user", p), ("assistant", r)) for p, r in (PAIRS * 3)[:n]]
    return write_jsonl(tmp_path / "chat.jsonl", [*rows, *extra])


def builder(tmp_path, seq_len: int = 64, **kw) -> DatasetBuilder:
    return DatasetBuilder(seq_len=seq_len, layout="padded", val_fraction=0.1, cache_dir=str(tmp_path / "cache"),
                          messages_column=kw.pop("messages_column", "messages"), **kw)


def save_template_tokenizer(folder, template: str = CHAT_TEMPLATE, bos: str | None = None):
    """A tiny Qwen-like tokenizer with `template` as its chat template, saved to `folder`."""
    chat_tokenizer([f"{p} {r} user assistant system" for p, r in PAIRS] * 4, template, bos).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def template_tokenizer_dir(tmp_path_factory):
    return save_template_tokenizer(tmp_path_factory.mktemp("tok-template"))


# ---------------------------------------------------------------------------------------------
# splitting and rendering


def test_the_last_assistant_turn_is_the_response_and_the_turns_before_it_the_prompt():
    messages = chat(("system", "be brief"), ("user", "eagle thai"), ("assistant", "the eagle serves thai food ."),
                    ("user", "and mill?"), ("assistant", "the mill serves french food ."))["messages"]
    prompt, response = split_conversation(messages, "row 1", "messages")
    assert response == "the mill serves french food ."
    assert isinstance(prompt, Conversation) and prompt.turns[-1] == ("user", "and mill?") and len(prompt.turns) == 4
    assert prompt.messages() == messages[:-1]
    # As text it is the plain rendering: one `role: content` line per turn, then `assistant:`.
    assert prompt == ("system: be brief\nuser: eagle thai\nassistant: the eagle serves thai food .\n"
                      "user: and mill?\nassistant:")
    assert render_plain([("user", "hi")]) == "user: hi\nassistant:"


def test_messages_that_do_not_end_with_an_assistant_turn_have_no_response():
    assert split_conversation([{"role": "user", "content": "hi"}], "row 1", "messages") is None
    assert split_conversation([], "row 1", "messages") is None
    assert split_conversation(chat(("assistant", "hi"), ("user", "bye"))["messages"], "row 1", "m") is None


@pytest.mark.parametrize("value, message", [
    ("not json", "holds text that is not JSON"),
    ({"role": "user"}, "is a dict"),
    ([{"role": "user", "content": None}], "message 0 .* content missing"),
    ([{"role": 3, "content": "x"}], "message 0 .* role a int"),
    (["hello"], "message 0 .* is a str"),
])
def test_malformed_messages_are_one_clear_error(value, message):
    with pytest.raises(DataError, match=message) as err:
        split_conversation(value, "'d.jsonl' line 4", "messages")
    assert "'d.jsonl' line 4" in str(err.value) and "\n" not in str(err.value)


def test_a_chat_template_renders_the_prompt_with_its_generation_prompt(template_tokenizer_dir):
    tokenizer = load_tokenizer(str(template_tokenizer_dir))
    conversation = Conversation([("system", "be brief"), ("user", "eagle thai")])
    ids = conversation_ids(tokenizer, [conversation])[0]
    text = tokenizer.apply_chat_template(conversation.messages(), tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    assert ids == tokenizer.encode(text, add_special_tokens=False)  # the markers are special tokens
    start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert ids.count(start) == 3 and ids[0] == start
    # Without a template: the plain rendering, encoded as text.
    bpe = train_bpe_tokenizer([t for p, r in PAIRS for t in (p, r)], 300)
    assert conversation_ids(bpe, [conversation])[0] == encode_texts(bpe, [str(conversation)])[0]


def test_content_cannot_forge_the_ids_the_methods_rely_on(template_tokenizer_dir):
    tokenizer = load_tokenizer(str(template_tokenizer_dir))
    tokenizer.add_special_tokens({"sep_token": "<sep>"})
    ids = conversation_ids(tokenizer, [Conversation([("user", "fill <mask> and <pad> then <sep>")])])[0]
    for reserved in (tokenizer.mask_token_id, tokenizer.pad_token_id, tokenizer.sep_token_id):
        assert reserved not in ids
    assert tokenizer.decode(ids).count("<mask>") == 1  # still there, as text


def test_a_start_token_the_template_writes_is_not_doubled(tmp_path):
    template = "{{ bos_token }}" + CHAT_TEMPLATE
    tokenizer = load_tokenizer(str(save_template_tokenizer(tmp_path / "tok", template, bos="<s>")))
    ids = conversation_ids(tokenizer, [Conversation([("user", "eagle thai")])])[0]
    assert tokenizer.bos_token_id not in ids and ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")


# ---------------------------------------------------------------------------------------------
# built rows: where the prompt ends


def test_rows_of_the_plain_rendering_split_at_the_separator(tmp_path):
    ds = builder(tmp_path).build_from_raw(str(chat_file(tmp_path)), 300)
    tok = ds.tokenizer
    row, start = [int(t) for t in ds.train.ids[0]], int(ds.train.prompt_len[0])
    prompt, response = PAIRS[0]
    head = [tok.bos_token_id, *encode_texts(tok, [f"system: be brief\nuser: {prompt}\nassistant:"])[0],
            tok.sep_token_id]
    assert row[:start] == head
    body = encode_texts(tok, [response])[0]
    assert row[start:start + len(body) + 1] == [*body, tok.eos_token_id]
    assert set(row[start + len(body) + 1:]) == {tok.pad_token_id}


def test_rows_of_a_chat_template_split_at_the_separator(tmp_path, template_tokenizer_dir):
    ds = builder(tmp_path).build_from_raw(str(chat_file(tmp_path)), str(template_tokenizer_dir))
    tok = ds.tokenizer
    row, start = [int(t) for t in ds.train.ids[0]], int(ds.train.prompt_len[0])
    prompt, response = PAIRS[0]
    rendered = tok.apply_chat_template([{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}],
                                       tokenize=False, add_generation_prompt=True)
    assert row[:start] == [tok.bos_token_id, *tok.encode(rendered, add_special_tokens=False), tok.sep_token_id]
    assert tok.decode(row[:start]).endswith("<|im_start|>assistant\n<sep>")
    assert tok.decode(row[start:], skip_special_tokens=True) == response
    # The template is part of the cache key: another template, another build.
    tok.chat_template = CHAT_TEMPLATE.replace("<|im_end|>\n", "<|im_end|>")
    again = builder(tmp_path).build_from_raw(str(chat_file(tmp_path)), tok)
    assert again.cache_path != ds.cache_path and not again.from_cache


def test_rows_without_a_final_assistant_turn_are_skipped_and_counted(tmp_path):
    extra = [chat(("user", "no answer")), chat(("assistant", "hi"), ("user", "left hanging")), {"messages": []}]
    ds = builder(tmp_path).build_from_raw(str(chat_file(tmp_path, extra, n=24)), 300)
    assert ds.meta["skipped"] == 3
    assert len(ds.train) + len(ds.val) == 24  # the split is over the rows kept
    assert any("3 rows skipped: their messages do not end with an assistant turn" in note for note in ds.notes)
    # A build with nothing skipped says nothing of it.
    (tmp_path / "clean").mkdir()
    clean = builder(tmp_path).build_from_raw(str(chat_file(tmp_path / "clean")), 300)
    assert clean.meta["skipped"] == 0 and clean.notes == []


def test_all_rows_skipped_is_one_clear_error(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [chat(("user", p)) for p, _ in PAIRS])
    with pytest.raises(DataError) as err:
        builder(tmp_path).build_from_raw(str(f), 300)
    message = str(err.value)
    assert f"none of the {len(PAIRS)} rows" in message and "ends with an assistant turn" in message
    assert "\n" not in message


def test_a_csv_cell_holds_the_messages_as_json(tmp_path):
    rows = [chat(("user", p), ("assistant", r)) for p, r in PAIRS[:3]]
    with open(tmp_path / "d.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["messages", "kind"])
        writer.writeheader()
        writer.writerows({"messages": json.dumps(r["messages"]), "kind": "d2t"} for r in rows)
    got = list(read_examples(str(tmp_path / "d.csv"), messages_column="messages", task_column="kind"))
    assert [(g["prompt"].turns, g["response"], g["task"]) for g in got] == [
        ((("user", p),), r, "d2t") for p, r in PAIRS[:3]]


def test_a_missing_messages_column_names_the_key(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "response": "r"}])
    with pytest.raises(DataError, match="messages column 'messages' not found.*prompt, response.*data.messages_column"):
        list(read_examples(str(f), messages_column="messages"))


# ---------------------------------------------------------------------------------------------
# the prompt of a chat run at sampling time


@pytest.mark.parametrize("templated", [False, True])
def test_a_chat_run_lays_a_prompt_out_as_one_user_turn_and_round_trips_its_rows(tmp_path, template_tokenizer_dir,
                                                                                 templated):
    from dlms.methods.base import SpecialTokens
    from dlms.data.tokenizer import special_ids
    from dlms.prompting import PromptLayout, split_prompts

    vocab = str(template_tokenizer_dir) if templated else 300
    f = write_jsonl(tmp_path / "d.jsonl", [chat(("user", p), ("assistant", r)) for p, r in PAIRS * 2])
    build = builder(tmp_path)
    ds = build.build_from_raw(str(f), vocab)
    layout = PromptLayout(DataConfig(format="prompt_response", messages_column="messages"), ds.tokenizer,
                          SpecialTokens.from_dict(special_ids(ds.tokenizer)))
    assert layout.chat
    row, start = [int(t) for t in ds.val.ids[0]], int(ds.val.prompt_len[0])
    user_text = build.split_examples(str(f), "val")[0]["prompt"].turns[0][1]
    assert layout.head(user_text) == row[:start]  # a plain prompt is one user turn
    assert layout.head([{"role": "user", "content": user_text}]) == row[:start]
    assert layout.head(as_conversation(user_text)) == row[:start]
    prompt, task, rest = split_prompts(layout, ds.val, 1)[0]
    assert isinstance(prompt, RenderedPrompt) and task is None and rest == row[start:]
    assert layout.head(prompt) == row[:start]  # rendered already: never wrapped twice


# ---------------------------------------------------------------------------------------------
# config


@pytest.mark.parametrize("overrides, message", [
    (["data.messages_column=messages"], "applies to prompt/response data only"),
    (["data.format=prompt_response", "data.messages_column=messages", "data.prompt_column=question"],
     "data.messages_column and data.prompt_column both say"),
    (["data.format=prompt_response", "data.messages_column=messages", "data.response_column=answer"],
     "data.messages_column and data.response_column both say"),
])
def test_config_keys_that_do_not_go_together(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_the_messages_column_is_a_declared_key():
    cfg = load_config(None, ["data.format=prompt_response", "data.messages_column=conversation", "data.task=chat"])
    assert cfg.data.messages_column == "conversation" and cfg.data.prompt_column == "prompt"


def test_the_builder_and_the_reader_take_one_way_only(tmp_path):
    with pytest.raises(ConfigError, match="keep one"):
        DatasetBuilder(layout="padded", prompt_column="prompt", messages_column="messages")
    with pytest.raises(ConfigError, match="keep one"):
        read_examples(str(chat_file(tmp_path)), prompt_column="prompt", messages_column="messages")
    with pytest.raises(ConfigError, match="layout='padded'"):
        DatasetBuilder(layout="packed", messages_column="messages")
