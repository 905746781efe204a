"""Writes the example model shipped in examples/: a small CNN image
classifier with random weights, saved with torch.export.save and a symbolic
batch dimension. Run it again to regenerate examples/classifier.pt2."""
import os

import torch
import torch.nn as nn


class Classifier(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(32, classes))

    def forward(self, image):
        return self.head(self.features(image)).softmax(-1)


def main():
    torch.manual_seed(0)
    model = Classifier().eval()
    batch = torch.export.Dim("batch")
    ep = torch.export.export(model, (torch.randn(2, 3, 32, 32),), dynamic_shapes={"image": {0: batch}})
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "classifier.pt2")
    torch.export.save(ep, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
