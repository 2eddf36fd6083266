"""market1501: Market-1501 (Zheng et al., "Scalable Person Re-identification", ICCV 2015).

1,501 identities seen by 6 cameras in front of a supermarket, cropped by the DPM
detector. The official release, `Market-1501-v15.09.15.zip`, has
- train (`bounding_box_train/`): 12,936 images of 751 identities;
- query (`query/`): 3,368 images of 750 identities, one per identity and camera;
- gallery (`bounding_box_test/`): 19,732 images: the 750 test identities, 2,793
  distractors (`0000_*`, person_id 0) and 3,819 junk detections (`-1_*`, person_id -1).
Names read `pppp_cCsS_ffffff_nn.jpg`: person, camera, sequence, frame, box index.
Read from tfds' manual_dir, as the zip or as its extracted folder; the JPEGs are
stored as they are. Optional person masks come from
`Market-1501-v15.09.15_masks/` beside it (one PNG per image, same relative path);
without that folder every mask is a 1x1 black PNG.
"""
import tensorflow_datasets as tfds

from reid_jax.data import market_layout

LAYOUT = market_layout.Layout(
    name="Market-1501",
    archive="Market-1501-v15.09.15.zip",
    folder="Market-1501-v15.09.15",
    pattern=r"(?P<pid>-1|\d{4})_c(?P<cam>\d)s\d_\d{6}_\d{2}\.jpg",
    example="0002_c1s1_000451_03.jpg",
    num_cameras=6,
    num_images={"train": 12936, "query": 3368, "gallery": 19732},
    num_train_ids=751,
    url="https://zheng-lab.cecs.anu.edu.au/Project/project_reid.html",
)


class Market1501(market_layout.MarketStyleBuilder):
  """Market-1501: 751 train / 750 test identities, 6 cameras, Market-1501 protocol.

  Person masks from the optional folder `Market-1501-v15.09.15_masks/`.
  """

  VERSION = tfds.core.Version("1.2.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release.",
      "1.1.0": f"Optional person masks from {LAYOUT.folder}_masks/.",
      "1.2.0": "Every image is checked to decode before anything is written.",
  }
  LAYOUT = LAYOUT
  MANUAL_DOWNLOAD_INSTRUCTIONS = LAYOUT.instructions()
