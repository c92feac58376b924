"""The works the catalog's thresholds and remedies rest on: full references, with a public URL.

Keys are what SIGNATURES and remedies cite; the catalog API and docs/signatures.md print the reference.
"""

from __future__ import annotations

SOURCES: dict[str, str] = {
    "goodfellow": "Goodfellow, I., Pouget-Abadie, J., Mirza, M., Xu, B., Warde-Farley, D., Ozair, S., Courville, A., "
                  "Bengio, Y. (2014). Generative Adversarial Nets. NeurIPS 2014. https://arxiv.org/abs/1406.2661",
    "dcgan": "Radford, A., Metz, L., Chintala, S. (2016). Unsupervised Representation Learning with Deep "
             "Convolutional Generative Adversarial Networks. ICLR 2016. https://arxiv.org/abs/1511.06434",
    "salimans": "Salimans, T., Goodfellow, I., Zaremba, W., Cheung, V., Radford, A., Chen, X. (2016). Improved "
                "Techniques for Training GANs. NeurIPS 2016. https://arxiv.org/abs/1606.03498",
    "ganhacks": "Chintala, S., Denton, E., Arjovsky, M., Mathieu, M. (2016). How to Train a GAN? Tips and tricks to "
                "make GANs work (§6 soft and noisy labels, §10 track failures early). "
                "https://github.com/soumith/ganhacks",
    "wgan": "Arjovsky, M., Chintala, S., Bottou, L. (2017). Wasserstein Generative Adversarial Networks. ICML 2017. "
            "https://arxiv.org/abs/1701.07875",
    "wgangp": "Gulrajani, I., Ahmed, F., Arjovsky, M., Dumoulin, V., Courville, A. (2017). Improved Training of "
              "Wasserstein GANs. NeurIPS 2017. https://arxiv.org/abs/1704.00028",
    "ttur": "Heusel, M., Ramsauer, H., Unterthiner, T., Nessler, B., Hochreiter, S. (2017). GANs Trained by a Two "
            "Time-Scale Update Rule Converge to a Local Nash Equilibrium. NeurIPS 2017. "
            "https://arxiv.org/abs/1706.08500",
    "sngan": "Miyato, T., Kataoka, T., Koyama, M., Yoshida, Y. (2018). Spectral Normalization for Generative "
             "Adversarial Networks. ICLR 2018. https://arxiv.org/abs/1802.05957",
    "hinge": "Lim, J. H., Ye, J. C. (2017). Geometric GAN. https://arxiv.org/abs/1705.02894",
    "r1": "Mescheder, L., Geiger, A., Nowozin, S. (2018). Which Training Methods for GANs do actually Converge? "
          "ICML 2018. https://arxiv.org/abs/1801.04406",
    "biggan": "Brock, A., Donahue, J., Simonyan, K. (2019). Large Scale GAN Training for High Fidelity Natural Image "
              "Synthesis. ICLR 2019. https://arxiv.org/abs/1809.11096",
    "ema": "Yazıcı, Y., Foo, C.-S., Winkler, S., Yap, K.-H., Piliouras, G., Chandrasekhar, V. (2019). The Unusual "
           "Effectiveness of Averaging in GAN Training. ICLR 2019. https://arxiv.org/abs/1806.04498",
    "diffaugment": "Zhao, S., Liu, Z., Lin, J., Zhu, J.-Y., Han, S. (2020). Differentiable Augmentation for "
                   "Data-Efficient GAN Training. NeurIPS 2020. https://arxiv.org/abs/2006.10738",
    "ada": "Karras, T., Aittala, M., Hellsten, J., Laine, S., Lehtinen, J., Aila, T. (2020). Training Generative "
           "Adversarial Networks with Limited Data. NeurIPS 2020. https://arxiv.org/abs/2006.06676",
    "unrolled": "Metz, L., Poole, B., Pfau, D., Sohl-Dickstein, J. (2017). Unrolled Generative Adversarial Networks. "
                "ICLR 2017. https://arxiv.org/abs/1611.02163",
    "veegan": "Srivastava, A., Valkov, L., Russell, C., Gutmann, M. U., Sutton, C. (2017). VEEGAN: Reducing Mode "
              "Collapse in GANs using Implicit Variational Learning. NeurIPS 2017. https://arxiv.org/abs/1705.07761",
    "kid": "Bińkowski, M., Sutherland, D. J., Arbel, M., Gretton, A. (2018). Demystifying MMD GANs. ICLR 2018. "
           "https://arxiv.org/abs/1801.01401",
    "prd": "Kynkäänniemi, T., Karras, T., Laine, S., Lehtinen, J., Aila, T. (2019). Improved Precision and Recall "
           "Metric for Assessing Generative Models. NeurIPS 2019. https://arxiv.org/abs/1904.06991",
    "prdc": "Naeem, M. F., Oh, S. J., Uh, Y., Choi, Y., Yoo, J. (2020). Reliable Fidelity and Diversity Metrics for "
            "Generative Models. ICML 2020. https://arxiv.org/abs/2002.09797",
    "autotrainer": "Zhang, X., Zhai, J., Ma, S., Shen, C. (2021). AUTOTRAINER: An Automatic DNN Training Problem "
                   "Detection and Repair System. ICSE 2021. https://doi.org/10.1109/ICSE43902.2021.00043",
    "deepdiagnosis": "Wardat, M., Cruz, B. D., Le, W., Rajan, H. (2022). DeepDiagnosis: Automatically Diagnosing "
                     "Faults and Recommending Actionable Fixes in Deep Learning Programs. ICSE 2022. "
                     "https://arxiv.org/abs/2112.04036",
    "ioffe": "Ioffe, S., Szegedy, C. (2015). Batch Normalization: Accelerating Deep Network Training by Reducing "
             "Internal Covariate Shift. ICML 2015. https://arxiv.org/abs/1502.03167",
    "maas": "Maas, A. L., Hannun, A. Y., Ng, A. Y. (2013). Rectifier Nonlinearities Improve Neural Network Acoustic "
            "Models. ICML 2013 Workshop on Deep Learning for Audio, Speech and Language Processing. "
            "https://ai.stanford.edu/~amaas/papers/relu_hybrid_icml2013_final.pdf",
    "measured": "ganscope's own labelled corpus: real runs of the built-in trainer (tests/scenarios.py, "
                "bench/detect.py), each labelled by what its raw metrics and fit measures show.",
}
