"""CNSDiff explorer engine: data, LightGCN, negative samplers, diffusion, training, run store.

Never imports Streamlit, never reads sys.argv outside cli.py, never prints outside cli.py.
"""
__version__ = "0.1.0"
