"""Explaining graph neural networks: node and edge relevance, GNN-LRP relevant walks, walk drawings."""
from .draw import draw_walks
from .relevance import edge_relevance, node_relevance
from .walks import relevant_walks

__all__ = ["node_relevance", "edge_relevance", "relevant_walks", "draw_walks"]
