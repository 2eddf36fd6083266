"""dukemtmc_reid: DukeMTMC-reID (Zheng, Zheng and Yang, ICCV 2017).

Hand-drawn boxes from the DukeMTMC videos (Ristani et al., 2016): 1,404
identities seen by 8 cameras, plus 408 distractor identities that appear in one
camera only. The official release, `DukeMTMC-reID.zip`, has
- train (`bounding_box_train/`): 16,522 images of 702 identities;
- query (`query/`): 2,228 images of the 702 test identities;
- gallery (`bounding_box_test/`): 17,661 images of 1,110 identities (the test
  identities and the distractors, which keep their own ids).
Names read `pppp_cC_fFFFFFFF.jpg`: person, camera, frame. The authors withdrew
DukeMTMC in 2019; build it only from a copy you may use. Read from tfds'
manual_dir, as the zip or as its extracted folder; the JPEGs are stored as they are.
Optional person masks come from `DukeMTMC-reID_masks/` beside it (one PNG per
image, same relative path); without that folder every mask is a 1x1 black PNG.
"""
import tensorflow_datasets as tfds

from reid_jax.data import market_layout

LAYOUT = market_layout.Layout(
    name="DukeMTMC-reID",
    archive="DukeMTMC-reID.zip",
    folder="DukeMTMC-reID",
    pattern=r"(?P<pid>\d{4})_c(?P<cam>\d)_f\d{7}\.jpg",
    example="0001_c2_f0046182.jpg",
    num_cameras=8,
    num_images={"train": 16522, "query": 2228, "gallery": 17661},
    num_train_ids=702,
    url="https://github.com/layumi/DukeMTMC-reID_evaluation",
)


class DukemtmcReid(market_layout.MarketStyleBuilder):
  """DukeMTMC-reID: 702 train / 702 test identities (+408 distractors), 8 cameras.

  Person masks from the optional folder `DukeMTMC-reID_masks/`.
  """

  VERSION = tfds.core.Version("1.2.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release.",
      "1.1.0": f"Optional person masks from {LAYOUT.folder}_masks/.",
      "1.2.0": "Every image is checked to decode before anything is written.",
  }
  LAYOUT = LAYOUT
  MANUAL_DOWNLOAD_INSTRUCTIONS = LAYOUT.instructions()
