"""Tiny random-weight transformers models of real architectures, saved to a folder.

No hub is reachable here, so tests build models from small configs and a BPE tokenizer trained in
memory, save them with `save_pretrained`, and load them back by path exactly as a user's
`hf:/path/to/model_folder` would. Replies are gibberish; the code path is the real one.
"""

from __future__ import annotations

from pathlib import Path

import torch

CORPUS = [
    "a photo of a cat sitting on a red sofa next to a window",
    "a dog runs across the green grass in the park at night",
    "Is there an oven in the kitchen? Answer yes or no.",
    "Describe the image in one sentence. The answer is a JSON object.",
    "two people ride bicycles along a wall under the blue sky",
] * 20

# A generic chat template: images become the model's image placeholder, text is appended as is.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}IMAGE_PLACEHOLDER"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chat_template(image_placeholder: str = "") -> str:
    return CHAT_TEMPLATE.replace("IMAGE_PLACEHOLDER", image_placeholder)


def build_tokenizer(special_tokens: list[str] = (), vocab_size: int = 400, image_placeholder: str = ""):
    """A byte-level BPE trained on a few sentences, wrapped as a fast tokenizer with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    base = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=base + [t for t in special_tokens if t not in base],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[t for t in special_tokens if t not in base],
    )
    fast.chat_template = chat_template(image_placeholder)
    return fast


def _seeded(seed: int = 0):
    torch.manual_seed(seed)


def build_text_llm(folder: Path) -> Path:
    """Qwen2ForCausalLM, 2 layers, hidden 32."""
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    _seeded()
    model = Qwen2ForCausalLM(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
