"""FusionRS: RGB–infrared–text remote-sensing datasets on Ray, and the models trained on them.

    import fusionrs
    ds = fusionrs.load("out/demo/build", split="train")   # a build's triplets as a Ray Dataset

Floors (docs/architecture.md): core/ (storage, images, model staging), config/, dataset/ (the
seam: schema, layout, loading), build/, train/, eval/, dev/ (sample data, tiny models, a local
OpenAI-compatible server).
"""

__version__ = "0.2.0"


def __getattr__(name):  # `fusionrs.load` without importing Ray for every `import fusionrs.x`
    if name == "load":
        from fusionrs.dataset.load import load

        return load
    raise AttributeError(name)
