"""CNN Lab: a browser lab for convolutional networks (Streamlit entry point).

`streamlit run app.py` imports this file to serve it (``app``: Streamlit with the sign-in
routes and the zip upload route beside it, pages/signin_routes.py and
pages/upload_routes.py), then runs it as every session's script
(``__main__``). Kept light on purpose: no TensorFlow import here, so the home page opens in
about a second.
"""

import streamlit as st

from pages.boundary import error_boundary
from pages.signin import (
    address,
    open_remembered_address,
    sign_in_page,
    sign_out_control,
    signed_in_user,
)


def home() -> None:
    """Landing view: what the lab does and where to start."""
    st.title(":material/psychology: CNN Lab")
    st.markdown(
        "Learn, tweak and demo convolutional networks from your browser — "
        "no notebook needed."
    )
    steps = [
        ("Explore", ":material/search:", "pages/explore.py",
         "look at a data set: counts, samples, mean images."),
        ("Configure", ":material/tune:", "pages/configure.py",
         "shape a CNN with sliders; see its shapes live."),
        ("Train", ":material/model_training:", "pages/train.py",
         "train it and watch loss and accuracy grow epoch by epoch."),
        ("Draw & predict", ":material/draw:", "pages/predict.py",
         "draw a digit and watch the probabilities move."),
        ("Runs", ":material/bar_chart:", "pages/runs.py",
         "compare runs, read their evaluation, download models."),
    ]
    cols = st.columns(len(steps))
    for col, (label, icon, path, text) in zip(cols, steps, strict=True):
        with col, st.container(border=True):
            st.page_link(path, label=label, icon=icon)
            st.caption(text)
    st.info(
        "New here? Start with **Explore** on the bundled MNIST sample, then train the "
        "`quick` preset — one epoch takes well under a minute on a laptop CPU."
    )


def main() -> None:
    """The script of every session: page config, sign-in, the navigation, one page."""
    st.set_page_config(page_title="CNN Lab", page_icon=":material/psychology:",
                       layout="wide")
    pages = [
        st.Page(home, title="Home", icon=":material/home:", default=True),
        st.Page("pages/explore.py", title="Explore", icon=":material/search:"),
        st.Page("pages/configure.py", title="Configure", icon=":material/tune:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/predict.py", title="Draw & predict", icon=":material/draw:"),
        st.Page("pages/runs.py", title="Runs", icon=":material/bar_chart:"),
        st.Page("pages/challenges.py", title="Challenges", icon=":material/emoji_events:"),
    ]
    user = signed_in_user()
    if user is None:  # class mode: the sign-in form in place of the page (no list of pages)
        # Every page is known, so a link such as /runs?run=… finds its page (no "Page not
        # found") and opens it, with its choice, once signed in.
        page = st.navigation(pages, position="hidden")
        sign_in_page(address(page.url_path))
        st.stop()
    sign_out_control(user)
    page = st.navigation(pages)
    open_remembered_address(page, pages)
    with error_boundary(page.title):  # one boundary around whichever page runs
        page.run()


if __name__ == "__main__":
    main()
else:  # imported by `streamlit run app.py`: the server, with its own routes beside it
    from pages import signin_routes, upload_routes

    app = st.App(__file__, routes=[*signin_routes.ROUTES, *upload_routes.ROUTES])
