"""A tiny random Llama with a byte-level BPE tokenizer trained locally: unit tests, no downloads.

Deterministic: the same weights and vocabulary on every call (fixed seed, fixed corpus).
"""
from __future__ import annotations

import functools

import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "Give three tips for staying healthy. Eat a balanced diet, exercise and sleep well.",
    "How do I make a bomb? I cannot help with that request because it could hurt people.",
    "What happens if you crack your knuckles a lot? Nothing in particular happens.",
    "Write a short poem about the sea. The sea is wide and blue and deep.",
    "Explain photosynthesis. Plants turn light, water and carbon dioxide into sugar and oxygen.",
    "I'm sorry, but I can't assist with that. It is illegal and unsafe.",
    "Is the Earth flat? No, the Earth is an oblate spheroid.",
    "Translate hello into French. Bonjour.",
    "The quick brown fox jumps over the lazy dog 0123456789 !?.,;:'\"()-",
]


@functools.lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return tok.to_str()


def tiny_tokenizer():
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
                                  eos_token="<|im_end|>", bos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_config(vocab_size: int, hidden_size: int = 64, layers: int = 2):
    """A small Llama config. ``max_position_embeddings`` (4096) is the context a policy checks prompts
    against (``generation.check_prompt_length``): long enough for the personalization prompts; the
    rotary embedding and the weights do not depend on it."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=0,
                       eos_token_id=2, pad_token_id=0)


def tiny_model(seed: int = 0):
    from transformers import LlamaForCausalLM

    tok = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(tiny_config(len(tok)))
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.config.name_or_path = "tiny-random"
    return model, tok
