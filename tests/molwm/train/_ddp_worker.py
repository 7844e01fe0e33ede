"""One rank of test_ddp.py's torchrun job: the real ``python -m molwm`` entry point, plus a record of
what this rank built and wrote, saved to ``$DDP_TEST_OUT/rank<RANK>.pt``.

Arguments after the script name are the ``molwm`` command line (e.g. ``pretrain --config ...``).
"""

from __future__ import annotations

import os
import runpy
import sys

import torch

import molwm.train.loop as loop
import molwm.train.pretrain as pretrain

built: list[torch.nn.Module] = []
saves: list[str] = []
_build, _save = pretrain.build_model, loop.save_checkpoint


def _recording_build(config, *args):
    model = _build(config, *args)
    built.append(model)
    return model


def _recording_save(state, path):
    saves.append(str(path))
    return _save(state, path)


pretrain.build_model = _recording_build
loop.save_checkpoint = _recording_save

sys.argv = ["molwm", *sys.argv[1:]]
code = 1
try:
    runpy.run_module("molwm", run_name="__main__", alter_sys=True)
except SystemExit as exit_:
    code = exit_.code
torch.save({"model": built[0].state_dict() if built else None, "saves": saves},
           os.path.join(os.environ["DDP_TEST_OUT"], f"rank{os.environ['RANK']}.pt"))
sys.exit(code)
