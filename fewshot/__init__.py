"""fewshot: choose the few-shot demonstrations that make an LLM most accurate, under a budget."""

from .api import SelectResult, select
from .data import Example, load_examples
from .embedding import CachedEmbedder, OpenAIEmbedder, SentenceTransformerEmbedder
from .errors import FewshotError, InputError
from .prompts import Template, load_template
from .selection import SELECTORS, Problem, Selection, Selector, make_selector
from .selection.baselines import BM25, DPP, KNN, MMR, KMeansDiversity, Random, VoteK
from .selection.design import GO
from .selection.sal import SAL

__version__ = "0.1.0"
__all__ = ["select", "SelectResult", "SAL", "Example", "load_examples", "CachedEmbedder", "OpenAIEmbedder", "SentenceTransformerEmbedder",
           "FewshotError", "InputError", "Template", "load_template", "SELECTORS", "Problem", "Selection",
           "Selector", "make_selector", "GO", "Random", "KNN", "MMR", "BM25", "KMeansDiversity", "VoteK", "DPP"]
