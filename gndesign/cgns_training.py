"""The C-GNS families: constraint-based simulators (:mod:`gndesign.cgns`) of particles and of
articulated systems. They train exactly as the forward simulators of the same data do (data, noise,
unrolled losses, validation), through the solver's unrolled iterations, and their checkpoints
record what the forward families' do (the scene, or the systems and feature layout) with the
``solver`` section in their configuration."""

from __future__ import annotations

from gndesign.cgns import ArticulatedCGNS, ParticleCGNS
from gndesign.families import Family
from gndesign.forward_training import ForwardTrainer, check_articulated, describe_articulated, system_specs
from gndesign.particle_training import ParticleTrainer, check_scene, describe_scene


class CGNSParticleTrainer(ParticleTrainer):
    """:class:`ParticleTrainer` (data, noise, losses, validation) for a C-GNS."""

    def build_model(self) -> ParticleCGNS:
        return ParticleCGNS(self.config.model, self.scene, self.config.solver)


class CGNSArticulatedTrainer(ForwardTrainer):
    """:class:`ForwardTrainer` (data, noise, unrolled losses, validation) for a C-GNS."""

    def build_model(self) -> ArticulatedCGNS:
        return ArticulatedCGNS(self.config.model, list(self.systems.values()), self.config.solver)


CGNS_PARTICLES = Family("cgns-particles", "a C-GNS", "the obstacle scene",
                        build=lambda cfg, blob: ParticleCGNS(cfg.model, blob["scene"], cfg.solver),
                        describe=describe_scene, check=check_scene, trainer=CGNSParticleTrainer)
CGNS_ARTICULATED = Family("cgns-articulated", "a C-GNS", "articulated systems",
                          build=lambda cfg, blob: ArticulatedCGNS(cfg.model, system_specs(blob), cfg.solver),
                          describe=describe_articulated, check=check_articulated, trainer=CGNSArticulatedTrainer)
