"""The teacher stage (`stage`): a foundation model's embedding and mapped logits for every window.

The models, the class mapping and the windows live in the runtime layer
(`birdclef.runtime.teacher`), shared with inference, where the teacher can be a
member of the final blend.
"""
