"""SynthSphere (DESIGN §6): procedurally generated 360° video + AmbiX FOA clips with exact ground truth.

Modules, one concept each: `sounds` (timbres), `looks` (how each class is drawn), `backdrop`
(direction-neutral scenery), `scenes` (sources and trajectories), `room` (reverberation, ambience),
`render` (one clip), `writer` (files + manifest). Captions come from `swansphere.captioning`'s
`RuleCaptioner`, the same rules that caption estimated trajectories.
"""

from swansphere.synth.config import SynthConfig
from swansphere.synth.render import Clip, generate_clip
from swansphere.synth.writer import MANIFEST, write_dataset

__all__ = ["MANIFEST", "Clip", "SynthConfig", "generate_clip", "write_dataset"]
