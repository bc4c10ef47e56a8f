"""The resident model, grammar-constrained output, prompts and the LangChain adapter."""
