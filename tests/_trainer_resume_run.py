"""A transformers ``Trainer`` in its own process, for tests/public/test_integrations.py.

``python _trainer_resume_run.py WORKDIR MODE...`` runs the modes in turn, each from
``set_seed``: ``full`` (8 steps, checkpoints every 3), ``killed`` (the same, SIGKILLed once
checkpoint-6 is written), ``resume`` and ``resume-without`` (``train(resume_from_checkpoint=...)``
from the killed run's checkpoint-6, with and without the RNG callback of
docs/guides/integrations.md). Each run that ends writes its final weights to MODE.json.
transformers is imported in ``main`` only: pytest imports this module for its doctests where
transformers is not installed. (Two processes, not four: importing transformers takes seconds.)
"""

from __future__ import annotations

import json
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reproducible_block import ReproducibleBlock, RNGState, register_generator, set_seed

SEED = 3
NOISE = torch.Generator()  # registered: the Trainer saves the global generators only


class Regression(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(0.3), nn.Linear(8, 1))

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": nn.functional.mse_loss(self.net(inputs), labels)}


def main(workdir: Path, modes: list[str]) -> None:
    import transformers
    from accelerate.state import AcceleratorState

    class BlockTrainer(transformers.Trainer):
        def training_step(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            noise = torch.randn(inputs["inputs"].shape, generator=NOISE)  # outside every block
            inputs = {**inputs, "inputs": inputs["inputs"] + 0.1 * noise}
            with ReproducibleBlock(("train-step", self.state.global_step)):
                return super().training_step(model, inputs, *args, **kwargs)

    class RNGStateCallback(transformers.TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            rng = RNGState().state_dict()  # on every rank
            if state.is_world_process_zero:
                folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
                torch.save(rng, os.path.join(folder, "rng_streams.pt"))

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step:  # resumed from checkpoint-<global_step>
                folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
                path = os.path.join(folder, "rng_streams.pt")
                RNGState().load_state_dict(torch.load(path, weights_only=True))

    class Killed(transformers.TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 6:
                os.kill(os.getpid(), signal.SIGKILL)

    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    register_generator(NOISE, name="noise")
    for mode in modes:
        set_seed(SEED)  # seeds NOISE too
        run(transformers, BlockTrainer, RNGStateCallback(), Killed(), mode, workdir)
        AcceleratorState._reset_state(True)  # the next run builds its own Accelerator


def run(
    transformers: Any, trainer_class: Any, rng: Any, killed: Any, mode: str, workdir: Path
) -> None:
    with ReproducibleBlock("dataset"):
        inputs = torch.randn(16, 4)
        rows = [{"inputs": row, "labels": row.sum(0, keepdim=True)} for row in inputs]
    with ReproducibleBlock("model-init"):
        model = Regression()
    callbacks: list[Any] = [] if mode == "resume-without" else [rng]
    if mode == "killed":
        callbacks.append(killed)
    output = workdir / ("full" if mode == "full" else "interrupted")
    arguments = transformers.TrainingArguments(
        output_dir=str(output),
        per_device_train_batch_size=4,
        num_train_epochs=2,
        learning_rate=0.05,
        save_strategy="steps",
        save_steps=3,
        seed=SEED,
        use_cpu=True,
        report_to=[],
        disable_tqdm=True,
        logging_strategy="no",
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    trainer = trainer_class(model=model, args=arguments, train_dataset=rows, callbacks=callbacks)
    resume = str(output / "checkpoint-6") if mode.startswith("resume") else None
    trainer.train(resume_from_checkpoint=resume)
    weights = torch.cat([parameter.detach().flatten() for parameter in model.parameters()])
    (workdir / f"{mode}.json").write_text(json.dumps(weights.tolist()))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
