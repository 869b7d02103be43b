"""Data: the in-memory loader (`loaders`), Fashion-MNIST (`fashion`), image folders, CSVs and CIFAR-10
(`images`, with `labels` for which file has which class and split, `decode` and `cache` for the pixels, and
`files` for file-backed loading, decoded in worker processes),
Hugging Face datasets (`hf`), batch augmentation (`augment`), safe unpickling (`safe_pickle`), the input
contract that training and prediction share (`preprocess`) and pictures of a batch (`show`).

Other packages use what is imported here; the modules inside use each other freely."""
from .augment import BatchAugment, augment_from_spec, check_aug_spec
from .common import DataNotFoundError, check_subset_size, data_root
from .decode import fit_image, image_size, resize_image
from .fashion import FASHION_MNIST_CLASSES, fashion_mnist, find_fashion_mnist, read_idx
from .files import FileLoader, ImageFiles, LoaderPositionError
from .hf import from_hf
from .images import CIFAR10_CLASSES, cifar10, image_csv, image_folder
from .labels import IMAGE_SUFFIXES, class_folder_key, class_of_file, image_files, images_in, in_training
from .loaders import BatchLoader, DataLoaders, TensorLoader
from .preprocess import Preprocessing, as_items, normalising_affine, preprocessing_of, to_batch
from .show import class_name, for_display, image_grid, show_batch, show_image

__all__ = ["BatchAugment", "augment_from_spec", "check_aug_spec", "DataNotFoundError", "check_subset_size",
           "data_root", "fit_image", "image_size", "resize_image", "FASHION_MNIST_CLASSES", "fashion_mnist",
           "find_fashion_mnist", "read_idx", "from_hf", "CIFAR10_CLASSES", "cifar10", "image_csv", "image_folder",
           "IMAGE_SUFFIXES", "class_folder_key", "class_of_file", "image_files", "images_in", "in_training",
           "BatchLoader", "DataLoaders", "TensorLoader",
           "FileLoader", "ImageFiles", "LoaderPositionError",
           "Preprocessing", "as_items", "normalising_affine", "preprocessing_of", "to_batch", "class_name",
           "for_display", "image_grid", "show_batch", "show_image"]
