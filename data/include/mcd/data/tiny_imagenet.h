// Reader for Tiny ImageNet in its published folder layout. The official val/ set, which has
// labels, is returned as the TEST set; a validation split is drawn from train with
// train_val_split, as for every other data set. Labels are indices into the sorted wnids
// (the order torchvision's ImageFolder gives the train/ folders), not wnids.txt's line order.
#pragma once
#include <string>

#include <mcd/data/dataset.h>
#include <mcd/data/image_decode.h>

namespace mcd::data {

// root/wnids.txt                 one wnid per line (200 in the real set)
// root/train/<wnid>/images/*     JPEGs of that class (500 per class in the real set)
// root/val/images/*              JPEGs of the test set
// root/val/val_annotations.txt   "<file name>\t<wnid>\t<bbox...>" per line
// Images are 64x64 and read as RGB (grayscale files are replicated). Throws naming the file
// or entry for: a missing file or folder, a duplicate or unknown wnid, a train/ folder not in
// wnids.txt, an empty class folder, an image without annotation, an annotation naming an
// unknown wnid or a missing file, a malformed annotation line, an image that is not 64x64, and
// (unless options.skip_bad_images) an undecodable image. options.channels is ignored.
TrainTest load_tiny_imagenet(const std::string& root, const ReadOptions& options = {});

}  // namespace mcd::data
