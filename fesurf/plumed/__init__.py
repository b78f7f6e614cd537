"""PLUMED coupling and PLUMED file formats.

- :mod:`~fesurf.plumed.files`: COLVAR and HILLS readers (restarts, truncated last lines, periodic CVs).
- :mod:`~fesurf.plumed.inputs`: fesurf CVs in PLUMED syntax, umbrella-window inputs, an input parser.
- :mod:`~fesurf.plumed.external`: SampleSet and MBAR PMF from umbrella windows run elsewhere.
- :mod:`~fesurf.plumed.fes`: ``sum_hills`` and metadynamics reweighting (c(t)).
- :mod:`~fesurf.plumed.live`: :class:`PlumedBias`, PLUMED as a bias in fesurf's batched MD; the ASE route.
- :mod:`~fesurf.plumed.export`: TorchScript export of CVs and surrogates for PLUMED's PYTORCH_MODEL.
- :mod:`~fesurf.plumed.cli`: ``fesurf analyze colvar`` and ``fesurf plumed-input``.

Only :mod:`~fesurf.plumed.live` needs the PLUMED kernel (``libplumedKernel.so``,
via ``PLUMED_KERNEL`` or ``kernel=``); everything else works without it.

Example
-------
>>> import io
>>> from fesurf.plumed import read_colvar
>>> read_colvar(io.StringIO("#! FIELDS time d\\n 0 0.15\\n")).fields
['time', 'd']
"""
from .external import restraint_energies, sampleset_from_colvar
from .fes import hills_bias, metad_ct, reweight_metad, sum_hills
from .files import Hills, PlumedTable, read_colvar, read_hills
from .inputs import (parse_plumed_input, plumed_cv_lines, read_window_input, read_windows_table,
                     umbrella_window_input, write_umbrella_inputs)
from .live import PlumedBias, PlumedUmbrellaRecorder, find_kernel, kernel_status, plumed_ase_calculator, plumed_tool
from .export import export_cv, export_module, export_potential

__all__ = [
    "read_colvar", "read_hills", "PlumedTable", "Hills",
    "plumed_cv_lines", "umbrella_window_input", "write_umbrella_inputs", "parse_plumed_input",
    "read_window_input", "read_windows_table",
    "sampleset_from_colvar", "restraint_energies",
    "sum_hills", "hills_bias", "reweight_metad", "metad_ct",
    "PlumedBias", "PlumedUmbrellaRecorder", "find_kernel", "kernel_status", "plumed_ase_calculator", "plumed_tool",
    "export_cv", "export_potential", "export_module",
]
