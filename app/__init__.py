"""TaCQ Studio: the Gradio app over the tacq library (thin: no algorithm lives here)."""
