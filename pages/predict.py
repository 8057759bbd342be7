"""Predict page (coming next)."""

import streamlit as st

st.title("Predict")
st.info("Coming next: this page is being built.")
