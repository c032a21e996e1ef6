"""A_EP: MimicGen-style data augmentation of demos into new object / environment / pose configurations.

Modules (one idea each): `segment` (subtask segmentation), `transform` (object-centric pose transform),
`constraints` (dual-arm coordination / sequential), `schedule` (per-step generator: bridges, segments),
`scenes` (C_aug -> scene configurations), `sources` (source prep, selection, per-attempt plans),
`execute` (batched MJX execution), `generate` (`augment`, stats). See docs/augmentation.md.
"""

from dexfly.augment.config import AugmentConfig
from dexfly.augment.constraints import SequentialDep
from dexfly.augment.generate import AugmentStats, augment
from dexfly.augment.schedule import GenStatic, Plan, gen_step, generate_open_loop

__all__ = ["AugmentConfig", "AugmentStats", "GenStatic", "Plan", "SequentialDep", "augment", "gen_step", "generate_open_loop"]
