"""Configure page (coming next)."""

import streamlit as st

st.title("Configure")
st.info("Coming next: this page is being built.")
