"""Agentic workloads as program specs: chatbot (ShareGPT), react (BFCL), lats (HumanEval)."""
