"""A learned particle simulator for the obstacle-design scene ("learning to simulate").

The dataset format lives in :mod:`gndesign.particle_data` and is re-exported here.
"""

from __future__ import annotations

from gndesign.particle_data import (
    SCENE_KEYS,
    ParticleDataset,
    scene_mismatch,
    validate_scene,
    write_particle_dataset,
)

__all__ = ["SCENE_KEYS", "ParticleDataset", "scene_mismatch", "validate_scene", "write_particle_dataset"]
