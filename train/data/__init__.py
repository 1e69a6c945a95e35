"""Training data: every source becomes light record columns, decoded lazily by ``brain_ct``.

One module per source, each producing records (:mod:`train.data.records`): :mod:`~train.data.image_folder`
(class folders, ``metadata.jsonl``, lesion masks, series neighbours), :mod:`~train.data.rsna` (RSNA 2019 CSV),
:mod:`~train.data.nifti_volumes`, :mod:`~train.data.phantoms` (generated heads and their cache),
:mod:`~train.data.real_anatomy` (real normal slices with painted lesions) and :mod:`~train.data.hub_datasets`
(Hugging Face datasets, whose rows are their own). Shared pieces: :mod:`~train.data.labels` (class names,
subtypes, label sets, loss weights), :mod:`~train.data.sampling` (validation split, subsampling, folds),
:mod:`~train.data.transform` (:class:`~train.data.transform.SliceTransform`, which decodes a record by its
``source``), :mod:`~train.data.splits` (:class:`~train.data.splits.Splits`) and :mod:`~train.data.build`
(:func:`~train.data.build.build_splits`, the data arguments → splits).

A new source is one module producing records with its own ``source`` value, plus one decode function in
:mod:`~train.data.transform` (its ``DECODERS`` table).
"""
