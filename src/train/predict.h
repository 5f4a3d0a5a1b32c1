// `vit_hpc predict`: a trained model (a folder exported by vit_hpc or any
// transformers ViTForImageClassification checkpoint) over a split of a
// vit_data_prep HDF5 file, or over a folder of JPEG images, on the GPU or
// the CPU. One CSV row per image: its file (or index), its label where
// known, the predicted class and every logit; the accuracy where labels
// exist. A folder of <class>/<image>.jpg whose class names match the
// model's labels counts as labelled; images are decoded and resized exactly
// as vit_data_prep does.
#pragma once

namespace vit {

// argv[0] is "predict". Returns the process exit status.
int predict_main(int argc, char** argv);

}  // namespace vit
