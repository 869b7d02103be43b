"""Package set-up; all metadata lives in settings.ini (nbdev style)."""
from configparser import ConfigParser

from setuptools import find_packages, setup

cfg = ConfigParser()
cfg.read("settings.ini")
cfg = cfg["DEFAULT"]

setup(
    name=cfg["lib_name"],
    version=cfg["version"],
    description=cfg["description"],
    keywords=cfg["keywords"],
    license=cfg["license"],
    python_requires=">=" + cfg["min_python"],
    packages=find_packages(include=[cfg["lib_name"], cfg["lib_name"] + ".*"]),
    install_requires=cfg["requirements"].split(),
    # every `<extra>_requirements` line is an extra: dev, onnx, ...
    extras_require={key.removesuffix("_requirements"): cfg[key].split() for key in cfg if key.endswith("_requirements")},
    entry_points={"console_scripts": cfg["console_scripts"].split()},
)
