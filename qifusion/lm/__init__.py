"""Word-level language models for decoding: building (``qifusion lm``), loading, lexicon, hotwords.

An LM dir (by default ``<model dir>/lm``) holds ``lm.bin`` (a KenLM binary n-gram model built by
KenLM's ``lmplz`` + ``build_binary``), ``lexicon.txt`` (one word per line followed by its spelling in
the model's units) and ``lm.json`` (how it was built). :mod:`qifusion.decode.lm_search` decodes with it.
"""
