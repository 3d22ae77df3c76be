"""KinD (Zhang, Zhang & Guo, ACM MM 2019): layer decomposition, reflectance restoration and illumination
adjustment nets, rebuilt in PyTorch from the official TensorFlow code (zhangyhuaee/KinD). See SOURCE.md."""
