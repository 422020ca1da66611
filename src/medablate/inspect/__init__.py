"""A trained trial on new images: evaluate, predict, saliency.
"""
