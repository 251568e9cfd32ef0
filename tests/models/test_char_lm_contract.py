"""The char LM (and cortex's generation helpers) against the transformers contract of the installed version.

Every check runs on the built-in char LM and, where it is about generation, on a tiny real Qwen2 made here with
``Qwen2Config`` + ``save_pretrained``: both are loaded through cortex (``cortex.hub.loading.load_model``, so the
char_lm and qwen families) and generate through ``cortex.generation``. The reference for cached generation is
a greedy loop of full forwards with no cache at all.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from cortex.data.tokenizers import build_char_tokenizer
from cortex.errors import ModelInputError
from cortex.generation import encode_prompts, generate_ids, pad_token_id, step_logits
from cortex.models.char_lm import CharLMConfig, CharLMForCausalLM

PROMPTS = ["def f(x):\n    return", "The cat sat on", "import os", "x"]   # odd lengths 21, 14, 9, 1
NEW = 9


def _char_lm(tok, **over) -> CharLMForCausalLM:
    torch.manual_seed(0)
    # a wide init so the random model's next-token distribution is far from uniform (argmax ties are rare)
    cfg = dict(vocab_size=len(tok), hidden_size=20, num_hidden_layers=3, num_attention_heads=4,
               max_position_embeddings=64, initializer_range=0.2)
    return CharLMForCausalLM(CharLMConfig(**{**cfg, **over})).eval()


@pytest.fixture(scope="module", params=["char_lm", "qwen2"])
def loaded(request, tmp_path_factory):
    """``(model, tokenizer)`` loaded from a saved folder through cortex's family for that architecture."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from cortex.hub.loading import load_model

    tok = build_char_tokenizer()
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "char_lm":
        model = _char_lm(tok)
    else:
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(Qwen2Config(
            vocab_size=len(tok), hidden_size=24, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.2,
            pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    lm = load_model(folder)
    assert lm.family.name == request.param.replace("qwen2", "qwen")
    return lm.model, lm.tokenizer


def _greedy_without_cache(model, ids: torch.Tensor, n: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Reference: ``n`` greedy steps, each a full forward over the whole sequence, no cache anywhere."""
    steps = []
    with torch.no_grad():
        for _ in range(n):
            logits = model(input_ids=ids, use_cache=False).logits[:, -1].float()
            steps.append(logits)
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids, steps


def test_cached_greedy_generation_equals_full_forwards(loaded):
    model, tok = loaded
    ids, _ = encode_prompts(tok, PROMPTS[0])
    model.generation_config.eos_token_id = None          # compare all NEW steps
    ref_ids, ref_logits = _greedy_without_cache(model, ids, NEW)
    with torch.no_grad():
        for use_cache in (True, False):
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW,
                                 do_sample=False, use_cache=use_cache, return_dict_in_generate=True,
                                 output_logits=True, pad_token_id=pad_token_id(tok))
            assert torch.equal(out.sequences, ref_ids), f"use_cache={use_cache}"
            for step, (got, want) in enumerate(zip(out.logits, ref_logits)):
                torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg=f"use_cache={use_cache} step {step}")
    # and the helper every cortex path uses
    assert torch.equal(generate_ids(model, ids, max_new_tokens=NEW, pad_token_id=pad_token_id(tok)),
                       ref_ids[:, ids.shape[1]:])


def test_batched_left_padded_generation_equals_one_prompt_at_a_time(loaded):
    model, tok = loaded
    pad = pad_token_id(tok)
    ids, mask = encode_prompts(tok, PROMPTS)
    assert (mask[:, -1] == 1).all() and (mask[:, 0] == 0).any()          # padded on the left
    batched = generate_ids(model, ids, mask, max_new_tokens=NEW, pad_token_id=pad)
    for row, prompt in enumerate(PROMPTS):
        one = generate_ids(model, *encode_prompts(tok, prompt), max_new_tokens=NEW, pad_token_id=pad)[0]
        assert torch.equal(batched[row, : len(one)], one), prompt
        assert (batched[row, len(one):] == pad).all()                  # a row that ended early is padding after


def test_step_logits_equal_a_full_forward(loaded):
    model, tok = loaded
    ids, _ = encode_prompts(tok, PROMPTS[1])
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=False).logits[0].float()
    steps = torch.stack(list(step_logits(model, ids)))
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=0)


def test_both_cache_names_are_taken_and_the_output_is_standard():
    from transformers.cache_utils import DynamicCache
    from transformers.modeling_outputs import CausalLMOutputWithPast

    tok = build_char_tokenizer()
    model = _char_lm(tok)
    ids = encode_prompts(tok, PROMPTS[0])[0]
    with torch.no_grad():
        full = model(input_ids=ids).logits[:, -1]
        outs = []
        for name in ("cache", "past_key_values"):
            cache = DynamicCache()
            model(input_ids=ids[:, :-1], **{name: cache})
            out = model(input_ids=ids[:, -1:], **{name: cache})
            assert isinstance(out, CausalLMOutputWithPast) and out.cache is cache
            assert cache.get_seq_length() == ids.shape[1]
            outs.append(out.logits[:, -1])
    torch.testing.assert_close(outs[0], full, atol=1e-5, rtol=0)
    torch.testing.assert_close(outs[1], full, atol=1e-5, rtol=0)
    with pytest.raises(ModelInputError, match="not both"):
        model(input_ids=ids, cache=DynamicCache(), past_key_values=DynamicCache())
    with pytest.raises(ModelInputError, match="Tuples"):
        model(input_ids=ids, cache=((torch.zeros(1),),))
    assert isinstance(model(input_ids=ids, return_dict=False), tuple)


def test_unknown_keywords_are_refused_by_name():
    tok = build_char_tokenizer()
    model = _char_lm(tok)
    ids = encode_prompts(tok, PROMPTS[2])[0]
    with pytest.raises(ModelInputError, match="token_type_ids"):
        model(input_ids=ids, token_type_ids=torch.zeros_like(ids))
    with pytest.raises(ModelInputError, match="cu_seq_lens_q"):
        model.transformer(input_ids=ids, cu_seq_lens_q=torch.zeros(2))
    with pytest.raises(ModelInputError, match=r"attention_mask has shape \(1, 3\)"):
        model(input_ids=ids, attention_mask=torch.ones(1, 3))


def test_labels_give_the_next_token_loss():
    tok = build_char_tokenizer()
    model = _char_lm(tok)
    ids, mask = encode_prompts(tok, PROMPTS[:2])
    labels = ids.masked_fill(mask == 0, -100)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    want = torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(),
                                             ignore_index=-100)
    torch.testing.assert_close(out.loss, want)
    n = int((labels[:, 1:] != -100).sum())
    summed = model(input_ids=ids, attention_mask=mask, labels=labels, num_items_in_batch=torch.tensor(n)).loss
    torch.testing.assert_close(summed, want)


def test_eager_and_sdpa_agree_and_only_eager_returns_attentions(tmp_path):
    tok = build_char_tokenizer()
    _char_lm(tok).save_pretrained(tmp_path)
    sdpa = CharLMForCausalLM.from_pretrained(tmp_path).eval()
    eager = CharLMForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert (sdpa.config._attn_implementation, eager.config._attn_implementation) == ("sdpa", "eager")
    ids, mask = encode_prompts(tok, PROMPTS)
    with torch.no_grad():
        a = sdpa(input_ids=ids, attention_mask=mask).logits
        b = eager(input_ids=ids, attention_mask=mask, output_attentions=True)
    real = mask.bool()                                    # padded positions are masked queries: not compared
    torch.testing.assert_close(a[real], b.logits[real], atol=1e-5, rtol=0)
    assert len(b.attentions) == 3 and b.attentions[0].shape == (4, 4, ids.shape[1], ids.shape[1])
    weights = b.attentions[0][real[:, None, :].expand(-1, 4, -1)]          # (n_real * heads, S)
    torch.testing.assert_close(weights.sum(-1), torch.ones(len(weights)))
    from_real_to_pad = real[:, None, :, None] & ~real[:, None, None, :]            # (B, 1, T, S)
    assert (b.attentions[0].masked_select(from_real_to_pad) == 0).all()             # padding keys get no weight
    with pytest.raises(ModelInputError, match="eager"):
        sdpa(input_ids=ids, attention_mask=mask, output_attentions=True)
    with pytest.raises(ModelInputError, match="flash_attention_2"):
        CharLMForCausalLM.from_pretrained(tmp_path, attn_implementation="flash_attention_2")
    sdpa.set_attn_implementation("eager")
    assert sdpa.config._attn_implementation == "eager"


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    tok = build_char_tokenizer()
    model = _char_lm(tok, dropout=0.1).train()
    ids, mask = encode_prompts(tok, PROMPTS)
    labels = ids.masked_fill(mask == 0, -100)

    def loss_and_grads(m):
        m.zero_grad()
        torch.manual_seed(7)                               # same dropout masks in both runs
        loss = m(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}

    plain_loss, plain = loss_and_grads(model)
    ckpt_model = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)      # transformers 5 renames it activation_checkpointing_*
        ckpt_model.gradient_checkpointing_enable()
    assert all(block.gradient_checkpointing for block in ckpt_model.transformer.layers)
    ckpt_loss, ckpt = loss_and_grads(ckpt_model)
    torch.testing.assert_close(ckpt_loss, plain_loss, atol=1e-6, rtol=0)
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)

    # what autograd keeps for backward shrinks: only the block inputs, not every activation inside
    def saved_bytes(m) -> int:
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            m(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        return total

    assert saved_bytes(ckpt_model) < 0.7 * saved_bytes(model)


def test_input_embeddings_are_exposed_and_resizable():
    tok = build_char_tokenizer()
    model = _char_lm(tok)
    assert model.get_input_embeddings() is model.transformer.wte
    new = torch.nn.Embedding(len(tok), 20)
    model.set_input_embeddings(new)
    assert model.get_input_embeddings() is new and model.transformer.get_input_embeddings() is new
    model.tie_weights()                                      # the head follows the new table (tied weights)
    assert model.lm_head.weight is new.weight
    model.resize_token_embeddings(len(tok) + 5)
    ids = torch.tensor([[len(tok) + 4, 7, 9]])
    assert model(input_ids=ids).logits.shape == (1, 3, len(tok) + 5)


def test_config_reports_every_problem_at_once():
    from cortex.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        CharLMConfig(vocab_size=0, num_hidden_layers=0, dropout=1.0)
    assert [p.field for p in err.value.problems] == ["vocab_size", "num_hidden_layers", "dropout"]
    with pytest.raises(ConfigError, match="not divisible"):
        CharLMConfig(hidden_size=10, num_attention_heads=3)
