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


# Default-size initialisation (0.02) makes tiny models repeat one token whatever the prompt, which
# would hide a batch that mixed up its rows; larger weights make replies depend on the input.
INIT_RANGE = 0.3


def _text_config(tokenizer, **extra) -> dict:
    """A 2-layer decoder with hidden size 32 over the tokenizer's vocabulary."""
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        initializer_range=INIT_RANGE,
        **extra,
    )


def _save(model_class, config, tokenizer, processor, folder: Path) -> Path:
    """Build with seeded random weights, make special tokens unlikely, save model and processor."""
    from transformers import GenerationConfig

    torch.manual_seed(0)
    model = model_class(config).eval()
    # Zero the output rows of special tokens: their logit is 0 while some random logit is always
    # higher, so a reply runs to max_tokens unless a test adds an ordinary token as an end token.
    with torch.no_grad():
        model.get_output_embeddings().weight[tokenizer.all_special_ids] = 0.0
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_text_llm(folder: Path) -> Path:
    """Qwen2ForCausalLM (the Qwen2.5 architecture)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tokenizer()
    config = Qwen2Config(**_text_config(tokenizer), tie_word_embeddings=False)
    return _save(Qwen2ForCausalLM, config, tokenizer, tokenizer, folder)


IDEFICS3_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"] + [
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)
]


def build_idefics3(folder: Path) -> Path:
    """Idefics3ForConditionalGeneration (the SmolVLM architecture): an image becomes up to 2x2 tiles
    of 32 px plus a global view, each 4 image tokens (8 px patches, pixel-shuffled by 2)."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor, Idefics3Processor

    tokenizer = build_tokenizer(IDEFICS3_TOKENS, image_placeholder="<image>")
    image_processor = Idefics3ImageProcessor(size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True)
    processor = Idefics3Processor(image_processor, tokenizer, image_seq_len=4, chat_template=tokenizer.chat_template)
    config = Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8),
        text_config=_text_config(tokenizer, model_type="llama"),
        scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    return _save(Idefics3ForConditionalGeneration, config, tokenizer, processor, folder)


QWEN2_VL_TOKENS = {
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
}


def build_qwen2_vl(folder: Path) -> Path:
    """Qwen2VLForConditionalGeneration: 8 px patches merged 2x2, images resized to 1k-4k pixels."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = build_tokenizer(list(QWEN2_VL_TOKENS.values()), image_placeholder="<|vision_start|><|image_pad|><|vision_end|>")
    sizes = dict(patch_size=8, merge_size=2, temporal_patch_size=2)
    image_processor = Qwen2VLImageProcessor(size={"shortest_edge": 32 * 32, "longest_edge": 64 * 64}, **sizes)
    video_processor = Qwen2VLVideoProcessor(**sizes)  # the processor insists on one; unused
    processor = Qwen2VLProcessor(image_processor, tokenizer, video_processor, chat_template=tokenizer.chat_template)
    config = Qwen2VLConfig(
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=8, spatial_merge_size=2),
        # mrope_section splits the 8-dim heads' 4 rotary frequencies over (time, height, width)
        text_config=_text_config(tokenizer, rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": 1e4}),
        **{name: tokenizer.convert_tokens_to_ids(token) for name, token in QWEN2_VL_TOKENS.items()},
    )
    return _save(Qwen2VLForConditionalGeneration, config, tokenizer, processor, folder)


def greedy_new_tokens(folder: Path, prompt: str, n: int) -> list[int]:
    """The first n token ids a text model writes for a user prompt, by plain transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=n, do_sample=False, eos_token_id=tokenizer.eos_token_id)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


def with_end_tokens(source: Path, folder: Path, extra_eos: list[int]) -> Path:
    """A copy of a model folder whose generation_config lists more end-of-turn ids (as chat models do)."""
    import json
    import shutil

    shutil.copytree(source, folder)
    path = folder / "generation_config.json"
    config = json.loads(path.read_text())
    eos = config["eos_token_id"]
    config["eos_token_id"] = (eos if isinstance(eos, list) else [eos]) + list(extra_eos)
    path.write_text(json.dumps(config, indent=2))
    return folder
