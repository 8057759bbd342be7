"""Train page (coming next)."""

import streamlit as st

st.title("Train")
st.info("Coming next: this page is being built.")
