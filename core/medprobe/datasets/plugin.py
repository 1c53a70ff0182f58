"""The built-in dataset loaders, registered through the same hook third-party plugins use.

Registration passes lazy ``"module:attr"`` strings: nothing here imports numpy-heavy loader
code, scikit-learn or pydicom until a spec with that scheme is opened.
"""

from __future__ import annotations

from medprobe.hookspecs import hookimpl

LOADERS: tuple[tuple[str, str, str], ...] = (
    ("synthetic", "medprobe.datasets.synthetic:lesions", "embedded generated ultrasound-like lesions (synthetic:lesions), 3 classes, patient groups"),
    ("digits", "medprobe.datasets.digits:digits", "scikit-learn's bundled 8x8 handwritten digits (real images, not medical), 10 classes"),
    ("imagefolder", "medprobe.datasets.imagefolder:imagefolder", "PATH/<class>/ or PATH/{train,val,test}/<class>/ image folders"),
    ("csv", "medprobe.datasets.manifest:manifest", "CSV manifest: path, label, optional split and patient/group columns"),
    ("medmnist", "medprobe.datasets.medmnist:medmnist", "MedMNIST .npz (train/val/test _images/_labels), official split"),
    ("busi", "medprobe.datasets.busi:busi", "Dataset_BUSI_with_GT breast ultrasound: benign/malignant/normal, masks excluded"),
    ("chest-xray", "medprobe.datasets.chest_xray:chest_xray", "Kermany chest X-ray: {train,val,test}/{NORMAL,PNEUMONIA}, patient ids from names"),
    ("covid-ct", "medprobe.datasets.covid_ct:covid_ct", "UCSD COVID-CT: CT_COVID/CT_NonCOVID with the published split lists"),
)


@hookimpl
def register_datasets(register):
    for scheme, factory, description in LOADERS:
        register(scheme, factory, description)
