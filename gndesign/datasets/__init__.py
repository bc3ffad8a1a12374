"""Dataset formats: the sharded-dataset base (:mod:`.base`), the trajectory (:mod:`.trajectories`)
and particle (:mod:`.particles`) formats declared against it, the physical-parameter conventions
(:mod:`.params`) and the format detector (:mod:`.formats`)."""
