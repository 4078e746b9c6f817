"""The method ``trainer fit`` trains when none is named, chosen by the rule in README
'Detection quality' (how the default is chosen) and kept apart so the command line can name
it without loading the training code."""

DEFAULT_METHOD = "lstm-at"
