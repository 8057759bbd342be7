"""Runs page (coming next)."""

import streamlit as st

st.title("Runs")
st.info("Coming next: this page is being built.")
