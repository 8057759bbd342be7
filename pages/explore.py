"""Explore page (coming next)."""

import streamlit as st

st.title("Explore")
st.info("Coming next: this page is being built.")
