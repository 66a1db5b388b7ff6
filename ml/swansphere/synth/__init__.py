"""SynthSphere (DESIGN §6): procedurally generated 360° video + AmbiX FOA clips with exact ground truth.

Modules, one concept each: `sounds` (timbres), `looks` (how each class is drawn), `backdrop`
(direction-neutral scenery), `scenes` (sources and trajectories), `room` (reverberation, ambience),
`wording` (captions from trajectories), `render` (one clip), `writer` (files + manifest).
"""

from swansphere.synth.config import SynthConfig
from swansphere.synth.render import Clip, generate_clip
from swansphere.synth.writer import MANIFEST, write_dataset

__all__ = ["MANIFEST", "Clip", "SynthConfig", "generate_clip", "write_dataset"]
