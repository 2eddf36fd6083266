"""reid_jax: person re-identification networks in JAX/Flax."""
import setuptools

setuptools.setup(
    name="reid_jax",
    version="0.1.0",
    description="MLFN, MGN, JLML, MPN and KPM person re-identification in JAX/Flax.",
    packages=setuptools.find_packages(include=["reid_jax", "reid_jax.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.8",
        "flax>=0.11",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "tensorflow-cpu>=2.18",
        "tensorflow-datasets>=4.9.7",
        "importlib_resources",  # imported by tensorflow-datasets but not declared for Python >= 3.9
        "numpy>=1.26",
        "ml-collections>=1.0",
        "clu>=0.0.12",
        "tensorboard>=2.18",
        "pillow>=10",
        "matplotlib>=3.8",
        "safetensors>=0.4",
        "threadpoolctl>=3.1",
        "h5py>=3.10",  # CUHK03's cuhk-03.mat is MATLAB v7.3, i.e. HDF5
        "scipy>=1.11",  # the MATLAB v5 .mat files of CUHK03's new protocol and GRID
    ],
    extras_require={
        # torch (CPU) is the independent reference for the weight-import parity tests;
        # torchreid (its model files need torch only) for MLFN's; nbclient and ipykernel
        # execute the notebooks of colabs/.
        "test": ["pytest>=8", "pytest-xdist>=3.5", "torch==2.13.0", "torchreid==0.2.5",
                 "nbclient>=0.10", "nbformat>=5.10", "jupyter_client>=8", "ipykernel>=6.29"],
    },
)
