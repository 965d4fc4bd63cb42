"""`caption`: caption mode's vision backend. It answers about an image by handing the image's stored
caption to a text `Model`, so a gallery with captions needs no VLM at query time."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lensgraph.pipeline.models.calls import ImageInput, Model, ModelError, Reply, Request
from lensgraph.pipeline.models.prompts import Prompt

CaptionLookup = Callable[[Sequence[str]], dict[str, str]]  # image ids -> stored captions


class CaptionVisionBackend:
    kind = "caption"
    cacheable = False  # the text Model underneath caches the actual calls

    def __init__(self, chat: Model, lookup: CaptionLookup, template: Prompt):
        self.chat = chat
        self.lookup = lookup
        self.template = template
        self.model_id = chat.spec
        self.max_concurrency = chat.backend.max_concurrency

    @property
    def identity(self) -> str:
        return f"caption|{self.chat.identity}"

    def describe(self, images: Sequence[ImageInput]) -> str:
        wanted = [i for image in images for i in (image.sources or (image.id,))]
        captions = {i: " ".join(c.split()) for i, c in self.lookup(wanted).items() if c}  # one line each
        if missing := [i for i in wanted if not captions.get(i)]:
            raise ModelError(
                f"caption mode: no stored caption for image(s) {', '.join(m[:12] for m in missing)}. "
                "Index them with --captions FILE or --caption-with SPEC, or use a vision model (--vlm)."
            )
        lines = []
        for n, image in enumerate(images, 1):
            label = f"Image {n}" if len(images) > 1 else "The image"
            if len(image.sources) > 1:
                sides = ["left", "right"] if len(image.sources) == 2 else [f"part {k}" for k in range(1, len(image.sources) + 1)]
                parts = "; ".join(f"{side}: {captions[s]}" for side, s in zip(sides, image.sources))
                lines.append(f"{label} shows {len(image.sources)} pictures side by side. {parts}")
            else:
                lines.append(f"{label}: {captions[image.id]}")
        return "\n".join(lines)

    def generate(self, request: Request) -> Reply:
        prompt = self.template.render(descriptions=self.describe(request.images), request=request.prompt)
        return self.chat.complete(
            prompt, system=request.system, max_tokens=request.max_tokens, temperature=request.temperature,
            json=request.json, schema=request.schema, logprobs=request.logprobs, stage=request.stage,
        )
